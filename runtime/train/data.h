// runtime/train/data.h — what recovery trains on: token sequences of a fixed length and, per
// token, whether it is a target of the loss.
//   Plain text: the tokenized stream cut into seq_len pieces (a shorter tail is dropped), every
//   token after a sequence's first a target.
//   Instruction data (Alpaca-style JSONL, one {"instruction", "input" (optional), "output"} object
//   per line): each example becomes [BOS] prompt response EOS, the prompt in Stanford Alpaca's
//   template (as LLM-Pruner's recovery uses) and masked out of the loss, so only the response and
//   its EOS are targets. Prompt and response are tokenized apart and concatenated. Examples are
//   packed whole, in file order, into sequences of seq_len (an example longer than seq_len is cut
//   to it); a sequence's unused tail is EOS padding that is no target. Examples packed together
//   attend to each other, as in packed fine-tuning generally.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace secateur::text {
class Tokenizer;
}

namespace secateur::train {

struct TrainData {
  TrainData() = default;
  TrainData(std::vector<int32_t> tokens_, std::vector<uint8_t> predict_ = {})   // NOLINT: a stream is data
      : tokens(std::move(tokens_)), predict(std::move(predict_)) {}
  std::vector<int32_t> tokens;
  std::vector<uint8_t> predict;     // per token, 1 = a target; empty = every token but a sequence's first
  int64_t sequences(int64_t seq_len) const { return static_cast<int64_t>(tokens.size()) / seq_len; }
  // Targets in sequence s (positions 1..seq_len-1).
  int64_t targets(int64_t s, int64_t seq_len) const;
};

// The Alpaca prompt of one example (the text before the response).
std::string alpaca_prompt(const std::string& instruction, const std::string& input);

// Reads, tokenizes and packs an Alpaca-style JSONL file; Error naming file:line on a bad line.
TrainData instruction_data(const std::string& path, const text::Tokenizer& tok, int64_t seq_len);

// Splits off the last `fraction` of the sequences (at least one when fraction > 0) as a held-out
// set: {train, held_out}. Both are whole sequences of seq_len.
std::pair<TrainData, TrainData> split_heldout(const TrainData& data, int64_t seq_len, double fraction);

}  // namespace secateur::train
