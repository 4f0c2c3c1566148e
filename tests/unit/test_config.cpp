// Config: the embedded defaults are the schema; errors name the key.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <fstream>

#include "runtime/config/config.h"
#include "runtime/core/check.h"
#include "runtime/io/hf_config.h"
#include "runtime/text/source.h"

using secateur::Error;
using secateur::config::Config;
using ::testing::HasSubstr;

namespace {

std::string write_tmp(const std::string& name, const std::string& text) {
  const auto p = std::filesystem::temp_directory_path() / ("secateur_test_" + name);
  std::ofstream(p) << text;
  return p.string();
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

}  // namespace

TEST(Config, DefaultsLoadAndResolve) {
  const Config c = Config::load("");
  EXPECT_EQ(c.get<std::string>("model.dtype"), "float32");
  EXPECT_EQ(c.get<std::vector<int64_t>>("eval.windows"), (std::vector<int64_t>{128, 2048}));
  EXPECT_EQ(c.source(), "<embedded default>");
}

TEST(Config, UserFileAndOverridesMergeOntoDefaults) {
  const auto path = write_tmp("ok.yaml", "eval:\n  max_tokens: 100\nmodel: {dtype: bfloat16}\n");
  const Config c = Config::load(path, {"eval.windows=[16, 32]", "run.seed=7"});
  EXPECT_EQ(c.get<int64_t>("eval.max_tokens"), 100);
  EXPECT_EQ(c.get<std::string>("model.dtype"), "bfloat16");
  EXPECT_EQ(c.get<std::vector<int64_t>>("eval.windows"), (std::vector<int64_t>{16, 32}));
  EXPECT_EQ(c.get<int64_t>("run.seed"), 7);
  EXPECT_EQ(c.get<int64_t>("eval.batch"), 8);               // untouched default
  // The resolved config is itself a valid config that reproduces the same values.
  const auto again = Config::load(write_tmp("resolved.yaml", c.dump()));
  EXPECT_EQ(again.dump(), c.dump());
}

TEST(Config, UnknownKeyIsAnErrorNamingIt) {
  const auto path = write_tmp("unknown.yaml", "eval:\n  windowz: [128]\n");
  const std::string err = error_of([&] { Config::load(path); });
  EXPECT_THAT(err, HasSubstr("unknown key 'eval.windowz'"));
  EXPECT_THAT(err, HasSubstr("windows"));                   // lists what is allowed there
  EXPECT_THAT(err, HasSubstr(path));
}

TEST(Config, BadValuesAreErrorsNamingTheKey) {
  EXPECT_THAT(error_of([] { Config::load("", {"model.dtype=fp8"}); }),
              HasSubstr("'model.dtype' = 'fp8' is not allowed (allowed: bfloat16, float16, float32)"));
  EXPECT_THAT(error_of([] { Config::load("", {"eval.max_tokens=lots"}); }),
              HasSubstr("'eval.max_tokens' must be an integer"));
  EXPECT_THAT(error_of([] { Config::load("", {"eval.windows=128"}); }), HasSubstr("'eval.windows' must be a list"));
  EXPECT_THAT(error_of([] { Config::load("", {"run.stages=[convert, prune_it]"}); }),
              HasSubstr("'run.stages' = 'prune_it' is not allowed"));
  EXPECT_THAT(error_of([] { Config::load("", {"eval"}); }), HasSubstr("is not key.sub=value"));
  EXPECT_THAT(error_of([] { Config::load("", {"model=3"}); }), HasSubstr("'model' must be a mapping"));
}

TEST(Config, MalformedYamlNamesFileAndLine) {
  const auto path = write_tmp("bad.yaml", "model:\n  path: [unclosed\n");
  const std::string err = error_of([&] { Config::load(path); });
  EXPECT_THAT(err, HasSubstr(path));
  EXPECT_THAT(err, HasSubstr("malformed YAML at line"));
  EXPECT_THAT(error_of([] { Config::load("/nonexistent/secateur.yaml"); }), HasSubstr("cannot read"));
}

TEST(HfConfig, LlamaRoundTripKeepsPerLayerWidths) {
  auto c = secateur::model::ModelConfig::make(secateur::model::Family::llama, 100, 64, 3, 4, 2, 96);
  c.d_ff = {96, 32, 0};
  c.n_heads = {4, 2, 0};
  c.n_kv_heads = {2, 1, 0};
  c.rope_theta = 100000.0;
  const auto j = secateur::io::config_to_hf(c, "float32");
  EXPECT_TRUE(j.contains("secateur_layer_widths"));
  const auto back = secateur::io::config_from_hf(j, "test");
  EXPECT_EQ(back.d_ff, c.d_ff);
  EXPECT_EQ(back.n_heads, c.n_heads);
  EXPECT_EQ(back.n_kv_heads, c.n_kv_heads);
  EXPECT_EQ(back.rope_theta, 100000.0);
  EXPECT_EQ(back.n_params(), c.n_params());
}

TEST(HfConfig, UnsupportedModelTypeAndRopeScalingAreRejected) {
  nlohmann::json j = {{"model_type", "mistral"}};
  EXPECT_THAT(error_of([&] { secateur::io::config_from_hf(j, "x/config.json"); }),
              HasSubstr("model_type 'mistral' is not supported"));
  auto c = secateur::model::ModelConfig::make(secateur::model::Family::llama, 100, 64, 2, 4, 2, 96);
  auto k = secateur::io::config_to_hf(c, "float32");
  k["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}};
  EXPECT_THAT(error_of([&] { secateur::io::config_from_hf(k, "x/config.json"); }), HasSubstr("'llama3'"));
}

TEST(Config, EveryShippedConfigIsValid) {
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(SECATEUR_CONFIGS_DIR)) {
    if (e.path().extension() != ".yaml") continue;
    EXPECT_NO_THROW(Config::load(e.path().string())) << e.path();
    ++n;
  }
  EXPECT_GE(n, 7);
}

// Calibration mixtures: "source=weight" entries; each text gets n × its share of the windows,
// rounded down, the rest to the largest remainders; bad entries and empty shares name the key.
TEST(Config, CalibrationMixtureSharesTheWindowsByWeight) {
  const Config c = Config::load("", {"calibration.mixture=[austen:emma=2, data/text/kjv.txt=1, a=b.txt=1]"});
  const auto shares = secateur::text::parse_mixture(c.get<std::vector<std::string>>("calibration.mixture"), "k");
  ASSERT_EQ(shares.size(), 3u);
  EXPECT_EQ(shares[0].source, "austen:emma");
  EXPECT_EQ(shares[2].source, "a=b.txt");   // the weight follows the last '='
  EXPECT_DOUBLE_EQ(shares[0].weight, 2.0);
  EXPECT_EQ(secateur::text::window_counts(shares, 128, "k"), (std::vector<int64_t>{64, 32, 32}));
  EXPECT_EQ(secateur::text::window_counts(shares, 10, "k"), (std::vector<int64_t>{5, 3, 2}));   // 5, 2.5, 2.5: the earlier
  EXPECT_EQ(secateur::text::window_counts({{"x", 1}}, 7, "k"), (std::vector<int64_t>{7}));
  EXPECT_THAT(error_of([&] { (void)secateur::text::window_counts(shares, 2, "calibration.mixture"); }),
              HasSubstr("'calibration.mixture': a=b.txt gets none of the 2 windows"));
  for (const char* bad : {"austen:emma", "austen:emma=0", "austen:emma=-1", "austen:emma=x", "=1", "austen:emma="}) {
    EXPECT_THAT(error_of([&] { (void)secateur::text::parse_mixture({bad}, "calibration.mixture"); }),
                HasSubstr("'calibration.mixture' has '" + std::string(bad) + "'"));
  }
  EXPECT_TRUE(Config::load("").get<std::vector<std::string>>("calibration.mixture").empty());
}
