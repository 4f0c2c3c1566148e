#include "runtime/train/data.h"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "runtime/core/check.h"
#include "runtime/text/tokenizer.h"

namespace secateur::train {

int64_t TrainData::targets(int64_t s, int64_t seq_len) const {
  if (predict.empty()) return seq_len - 1;
  int64_t n = 0;
  for (int64_t i = s * seq_len + 1; i < (s + 1) * seq_len; ++i) n += predict[i];
  return n;
}

std::string alpaca_prompt(const std::string& instruction, const std::string& input) {
  if (input.empty()) {
    return "Below is an instruction that describes a task. Write a response that appropriately completes the "
           "request.\n\n### Instruction:\n" + instruction + "\n\n### Response:\n";
  }
  return "Below is an instruction that describes a task, paired with an input that provides further context. "
         "Write a response that appropriately completes the request.\n\n### Instruction:\n" + instruction +
         "\n\n### Input:\n" + input + "\n\n### Response:\n";
}

TrainData instruction_data(const std::string& path, const text::Tokenizer& tok, int64_t seq_len) {
  std::ifstream in(path);
  SECATEUR_CHECK(in.good(), "[data] {}: cannot open the instruction file", path);
  SECATEUR_CHECK(seq_len > 1, "[data] sequences of {} tokens cannot hold an example", seq_len);
  const auto& spec = tok.spec();
  SECATEUR_CHECK(spec.eos_id >= 0, "[data] {}: the tokenizer has no EOS token to end the responses with", path);
  TrainData d;
  int64_t used = 0;                                   // tokens in the current sequence
  const auto pad_to_end = [&] {
    for (; used > 0 && used < seq_len; ++used) {
      d.tokens.push_back(spec.eos_id);
      d.predict.push_back(0);
    }
    used = 0;
  };
  std::string line;
  int64_t line_no = 0, examples = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {   // syntax, and numbers out of range
      SECATEUR_FAIL("[data] {}:{}: not JSON ({})", path, line_no, e.what());
    }
    SECATEUR_CHECK(j.is_object(), "[data] {}:{}: not a JSON object", path, line_no);
    const auto field = [&](const char* key, bool required) {
      if (!j.contains(key) && !required) return std::string();
      SECATEUR_CHECK(j.contains(key) && j[key].is_string(), "[data] {}:{}: no '{}' string", path, line_no, key);
      return j[key].get<std::string>();
    };
    // encode() puts BOS before the prompt when the tokenizer adds one; the response gets none.
    std::vector<int32_t> ids = tok.encode(alpaca_prompt(field("instruction", true), field("input", false)), false);
    std::vector<uint8_t> target(ids.size(), 0);
    const std::vector<int32_t> response = tok.encode(field("output", true), false);
    const size_t skip = spec.add_bos && !response.empty() && response[0] == spec.bos_id ? 1 : 0;
    ids.insert(ids.end(), response.begin() + static_cast<int64_t>(skip), response.end());
    ids.push_back(spec.eos_id);
    target.resize(ids.size(), 1);
    const int64_t n = std::min<int64_t>(static_cast<int64_t>(ids.size()), seq_len);
    if (used + n > seq_len) pad_to_end();
    d.tokens.insert(d.tokens.end(), ids.begin(), ids.begin() + n);
    d.predict.insert(d.predict.end(), target.begin(), target.begin() + n);
    used = (used + n) % seq_len;
    ++examples;
  }
  pad_to_end();
  SECATEUR_CHECK(examples > 0, "[data] {}: no examples", path);
  return d;
}

std::pair<TrainData, TrainData> split_heldout(const TrainData& data, int64_t seq_len, double fraction) {
  SECATEUR_CHECK(fraction >= 0 && fraction < 1, "[config] 'recover.heldout' = {} must be in [0, 1)", fraction);
  const int64_t n = data.sequences(seq_len);
  const int64_t k = fraction > 0 ? std::max<int64_t>(1, std::llround(fraction * static_cast<double>(n))) : 0;
  SECATEUR_CHECK(k < n, "[config] 'recover.heldout' = {} leaves no training sequence of the {}", fraction, n);
  const auto cut = [&](int64_t from, int64_t to) {
    TrainData part;
    part.tokens.assign(data.tokens.begin() + from * seq_len, data.tokens.begin() + to * seq_len);
    if (!data.predict.empty()) {
      part.predict.assign(data.predict.begin() + from * seq_len, data.predict.begin() + to * seq_len);
    }
    return part;
  };
  return {cut(0, n - k), cut(n - k, n)};
}

}  // namespace secateur::train
