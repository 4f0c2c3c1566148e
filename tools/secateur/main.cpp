// tools/secateur/main.cpp — the `secateur` executable: parse the command line, resolve the
// config, run the stages. Every error becomes one line on stderr and exit code 1.
#include <ATen/Parallel.h>
#include <torch/version.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "parallel/bench_comm.h"
#include "parallel/device.h"
#include "parallel/grid.h"
#include "runtime/core/check.h"
#include "runtime/core/log.h"
#include "runtime/io/atomic_file.h"
#include "runtime/io/checkpoint.h"
#include "runtime/text/source.h"
#include "tools/secateur/bench_forward.h"
#include "tools/secateur/bench_train.h"
#include "tools/secateur/compare.h"
#include "tools/secateur/pipeline.h"

namespace {

using namespace secateur;

// "config.yaml key.sub=value ..." -> (config path, overrides)
config::Config resolve(const std::vector<std::string>& args, const std::vector<std::string>& extra) {
  std::string path;
  std::vector<std::string> overrides;
  for (const std::string& a : args) {
    if (a.find('=') != std::string::npos) {
      overrides.push_back(a);
    } else {
      SECATEUR_CHECK(path.empty(), "[cli] two config files given: {} and {}", path, a);
      path = a;
    }
  }
  overrides.insert(overrides.end(), extra.begin(), extra.end());
  return config::Config::load(path, overrides);
}

// The process grid for a command: MPI (a world of one without a launcher), TP from the config.
std::unique_ptr<parallel::Grid> start(const config::Config& cfg, const std::string& command, int* argc,
                                      char*** argv) {
  const auto threads = cfg.get<int64_t>("run.threads");
  if (threads > 0) at::set_num_threads(static_cast<int>(threads));
  const c10::DeviceType device = cfg.get<std::string>("model.device") == "cuda" ? c10::kCUDA : c10::kCPU;
  auto grid = parallel::Grid::init(argc, argv, static_cast<int>(cfg.get<int64_t>("parallel.tp")), device);
  log::init(grid->rank(), grid->world_size(), cfg.get<std::string>("logging.level"));
  spdlog::info("secateur {} | config {} | torch {} | {} threads/rank | world {} = dp {} x tp {}", command,
               cfg.source(), TORCH_VERSION, at::get_num_threads(), grid->world_size(), grid->dp_size(),
               grid->tp_size());
  const std::string table = grid->table();       // collective
  spdlog::info("grid\n{}", table);
  spdlog::info("{}", parallel::format_report(parallel::describe_devices()));
  return grid;
}

int run_pipeline(const config::Config& cfg, const std::string& command, const std::vector<std::string>& stages,
                 int* argc, char*** argv) {
  auto grid = start(cfg, command, argc, argv);
  tools::Pipeline(cfg, *grid, command == "run", stages).run();
  grid->finalize();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Secateur: structured pruning of LLaMA/GPT models on a DP x TP grid"};
  app.require_subcommand(1);
  std::vector<std::string> args;
  const std::string args_help = "an optional config.yaml (default: the embedded configs/default.yaml) and key.sub=value overrides";

  auto* run = app.add_subcommand("run", "run the stages listed in run.stages");
  run->add_option("args", args, args_help);

  std::string in, out;
  auto* convert = app.add_subcommand("convert", "GGUF or HF checkpoint -> HF directory (config.json, safetensors, tokenizer)");
  convert->add_option("args", args, args_help);
  convert->add_option("--in", in, "model to convert (sets model.path)");
  convert->add_option("--out", out, "HF directory to write (sets convert.out)");

  auto* eval = app.add_subcommand("eval", "perplexity (eval.windows), zero-shot tasks (eval.tasks), speed (eval.speed)");
  eval->add_option("args", args, args_help);
  std::vector<std::string> compare;
  eval->add_option("--compare", compare, "two run directories: their final results side by side, with B/A")
      ->expected(2);
  eval->add_option("--out", out, "with --compare: also write the table to this file");
  auto* prune = app.add_subcommand("prune", "score, decide, remove and export (prune.*, calibration.*)");
  prune->add_option("args", args, args_help);
  auto* gum = app.add_subcommand("gum", "training-time MLP neuron pruning: GUM, movement, gradual random/magnitude (gum.*, recover.*)");
  gum->add_option("args", args, args_help);
  auto* sparse = app.add_subcommand("sparse", "unstructured pruning while training: RPP or iterative magnitude (sparse.*, recover.*)");
  sparse->add_option("args", args, args_help);
  auto* report = app.add_subcommand("report", "redundancy of the MLP neurons: sensitivity, uniqueness, reconstructability (report.*)");
  report->add_option("args", args, args_help);
  auto* recover = app.add_subcommand("recover", "LoRA or full fine-tuning of model.path, with checkpoints (recover.*)");
  recover->add_option("args", args, args_help);
  auto* gen = app.add_subcommand("generate", "generate text from generate.prompt (greedy or top-p)");
  gen->add_option("args", args, args_help);

  std::string text;
  auto* tok = app.add_subcommand("tokenize", "write the token ids of a text as little-endian int32");
  tok->add_option("--tokenizer", in, "a .gguf file or an HF directory")->required();
  tok->add_option("--text", text, "austen:<novel> or a UTF-8 file")->required();
  tok->add_option("--out", out, "output file")->required();
  std::string text_out;
  tok->add_option("--text-out", text_out, "also write the text exactly as it was tokenized");

  auto* bench = app.add_subcommand("bench", "benchmarks that write JSON");
  bench->require_subcommand(1);
  tools::BenchForwardOptions bf;
  auto* bench_fwd = bench->add_subcommand("forward", "prefill tokens/s and peak RSS of a dense forward pass");
  bench_fwd->add_option("--model", bf.model, "a .gguf file or an HF directory")->required();
  bench_fwd->add_option("--batch", bf.batch, "sequences per forward");
  bench_fwd->add_option("--seq", bf.seq, "tokens per sequence");
  bench_fwd->add_option("--iters", bf.iters, "timed forward passes (after one warm-up)");
  bench_fwd->add_option("--threads", bf.threads, "intra-op threads (0 = all cores)");
  bench_fwd->add_option("--dtype", bf.dtype, "float32 | bfloat16");
  bench_fwd->add_option("--out", bf.out, "JSON file to write");
  bench_fwd->add_flag("--backward", bf.backward, "also run backward of the summed NLL (weights require grad)");

  parallel::BenchCommOptions bc;
  auto* bench_comm = bench->add_subcommand("comm", "all-reduce / all-gather bandwidth over the world, TP and DP groups");
  bench_comm->add_option("--sizes", bc.sizes_bytes, "message sizes in bytes");
  bench_comm->add_option("--iters", bc.iters, "timed iterations per size");
  bench_comm->add_option("--tp", bc.tp, "tensor-parallel size of the grid");
  bench_comm->add_option("--out", bc.out, "JSON file to write (rank 0)");

  tools::BenchTrainOptions bt;
  auto* bench_train = bench->add_subcommand("train", "recovery-training tokens/s and MFU: LoRA, LoRA + KD, full");
  bench_train->add_option("--model", bt.model, "a .gguf file, an HF directory, or random:llama-1b")->required();
  bench_train->add_option("--methods", bt.methods, "lora, lora_kd, full, full_kd");
  bench_train->add_option("--steps", bt.steps, "timed steps (after one warm-up step); the median is reported");
  bench_train->add_option("--batch", bt.batch, "sequences per step, all DP ranks together");
  bench_train->add_option("--micro-batch", bt.micro_batch, "sequences per forward/backward on one rank");
  bench_train->add_option("--seq", bt.seq, "tokens per sequence");
  bench_train->add_option("--threads", bt.threads, "intra-op threads (0 = all cores)");
  bench_train->add_option("--dtype", bt.dtype, "float32 | bfloat16");
  bench_train->add_option("--device", bt.device, "cpu | cuda");
  bench_train->add_option("--peak-n", bt.peak_n, "size of the square matmul that measures the peak");
  bench_train->add_option("--tp", bt.tp, "tensor-parallel size of the grid");
  bench_train->add_option("--out", bt.out, "JSON file to write (rank 0)");

  auto* env = app.add_subcommand("env", "print the devices, NCCL and CUDA this build sees");

  CLI11_PARSE(app, argc, argv);
  try {
    if (*run) {
      const auto cfg = resolve(args, {});
      return run_pipeline(cfg, "run", cfg.get<std::vector<std::string>>("run.stages"), &argc, &argv);
    }
    if (*convert) {
      std::vector<std::string> extra;
      if (!in.empty()) extra.push_back("model.path=" + in);
      if (!out.empty()) extra.push_back("convert.out=" + out);
      return run_pipeline(resolve(args, extra), "convert", {"convert"}, &argc, &argv);
    }
    if (*eval && !compare.empty()) {
      const std::string table = tools::compare_runs(compare[0], compare[1]);
      std::cout << table;
      if (!out.empty()) io::write_file_atomic(out, table);
      return 0;
    }
    if (*eval) return run_pipeline(resolve(args, {}), "eval", {"eval"}, &argc, &argv);
    if (*gen) return run_pipeline(resolve(args, {}), "generate", {"generate"}, &argc, &argv);
    if (*prune) return run_pipeline(resolve(args, {}), "prune", {"prune"}, &argc, &argv);
    if (*recover) return run_pipeline(resolve(args, {}), "recover", {"recover"}, &argc, &argv);
    if (*gum) return run_pipeline(resolve(args, {}), "gum", {"gum"}, &argc, &argv);
    if (*sparse) return run_pipeline(resolve(args, {}), "sparse", {"sparse"}, &argc, &argv);
    if (*report) return run_pipeline(resolve(args, {}), "report", {"report"}, &argc, &argv);
    // A benchmark on its own grid (tp <= 0: 1).
    const auto on_grid = [&](int tp, c10::DeviceType device, const auto& bench) {
      auto grid = parallel::Grid::init(&argc, &argv, tp > 0 ? tp : 1, device);
      log::init(grid->rank(), grid->world_size());
      const int rc = bench(*grid);
      grid->finalize();
      return rc;
    };
    if (*bench_comm) {
      return on_grid(bc.tp, c10::DeviceType::CPU, [&](parallel::Grid& g) { return parallel::bench_comm(g, bc); });
    }
    if (*bench_train) {
      return on_grid(bt.tp, bt.device == "cuda" ? c10::DeviceType::CUDA : c10::DeviceType::CPU,
                     [&](parallel::Grid& g) { return tools::bench_train(g, bt); });
    }
    if (*tok) {
      const auto cfg = config::Config::load("");
      const std::string content = text::read_text(text, cfg.get<std::string>("data.austen"));
      const auto ids = io::load_tokenizer(in).encode(content, /*parse_special=*/false);
      if (!text_out.empty()) io::write_file_atomic(text_out, content);
      io::write_file_atomic(out, std::string_view(reinterpret_cast<const char*>(ids.data()), ids.size() * 4));
      std::cout << ids.size() << " tokens -> " << out << "\n";
      return 0;
    }
    if (*bench_fwd) return tools::bench_forward(bf);
    if (*env) {
      std::cout << parallel::format_report(parallel::describe_devices()) << "\n";
      return 0;
    }
  } catch (const std::exception& e) {
    // One line, and on a multi-rank job the whole job goes down with it (MPI_Abort), never a hang.
    // Errors in the config, the grid or the checkpoint hit every rank alike: ranks other than 0
    // wait a moment so that rank 0's abort usually ends the job first and its line is the only one.
    const auto [rank, world] = log::rank_from_env();
    if (world > 1) {
      if (rank != 0) std::this_thread::sleep_for(std::chrono::seconds(3));
      parallel::abort_job(std::string("secateur: error: ") + e.what());
    }
    std::cerr << "secateur: error: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
