// tools/secateur/main.cpp — the `secateur` executable: parse the command line, resolve the
// config, run the stages. Every error becomes one line on stderr and exit code 1.
#include <ATen/Parallel.h>
#include <torch/version.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "parallel/bench_comm.h"
#include "parallel/device.h"
#include "parallel/grid.h"
#include "runtime/config/choices.h"
#include "runtime/core/check.h"
#include "runtime/core/log.h"
#include "runtime/io/atomic_file.h"
#include "runtime/io/checkpoint.h"
#include "runtime/model/shapes.h"
#include "runtime/text/source.h"
#include "tools/secateur/bench_forward.h"
#include "tools/secateur/bench_prune.h"
#include "tools/secateur/bench_train.h"
#include "tools/secateur/compare.h"
#include "tools/secateur/init.h"
#include "tools/secateur/memory.h"
#include "tools/secateur/pipeline.h"
#include "tools/secateur/process.h"
#include "tools/secateur/sweep.h"

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

// A benchmark on its own grid (tp <= 0: 1).
template <class Bench>
int on_grid(int tp, c10::DeviceType device, int* argc, char*** argv, const Bench& bench) {
  auto grid = parallel::Grid::init(argc, argv, tp > 0 ? tp : 1, device);
  log::init(grid->rank(), grid->world_size());
  const int rc = bench(*grid);
  grid->finalize();
  return rc;
}

// The command line: every subcommand, its options, and what each one runs.
class Cli {
 public:
  Cli() {
    app_.require_subcommand(1);
    add_stage_commands();
    add_tokenize();
    add_init();
    add_benches();
    add_sweep();
    env_ = app_.add_subcommand("env", "print the devices, NCCL and CUDA this build sees");
  }
  CLI::App& app() { return app_; }
  int dispatch(int* argc, char*** argv);

 private:
  void add_stage_commands();
  void add_tokenize();
  void add_init();
  void add_benches();
  void add_sweep();
  int sweep() const;
  CLI::App* stage_command(const char* name, const char* help) {
    CLI::App* c = app_.add_subcommand(name, help);
    c->add_option("args", args_, "an optional config.yaml (default: the embedded configs/default.yaml) and "
                  "key.sub=value overrides");
    c->add_option("--profile", profile_, "write every timed phase as a Chrome trace to this file (run.profile)");
    stage_commands_.push_back(c);
    return c;
  }
  int tokenize() const;

  CLI::App app_{"Secateur: structured pruning of LLaMA/GPT models on a DP x TP grid"};
  std::vector<CLI::App*> stage_commands_;   // each runs the stage of its name (run: run.stages)
  CLI::App *convert_ = nullptr, *eval_ = nullptr, *tok_ = nullptr, *env_ = nullptr, *init_ = nullptr, *memory_ = nullptr;
  CLI::App *bench_fwd_ = nullptr, *bench_prune_ = nullptr, *bench_comm_ = nullptr, *bench_train_ = nullptr, *sweep_ = nullptr;
  std::string sweep_file_, collect_;
  int64_t sweep_parallel_ = 0;
  std::string sweep_list_;
  bool sweep_slurm_ = false;
  std::string sweep_sbatch_;
  std::vector<std::string> args_, compare_;
  std::string in_, out_, text_, text_out_, profile_;
  tools::BenchForwardOptions bf_;
  tools::BenchPruneOptions bp_;
  parallel::BenchCommOptions bc_;
  std::string bc_device_ = "cpu";
  tools::BenchTrainOptions bt_;
  tools::InitOptions init_opt_;
  tools::MemoryOptions mem_;
};

void Cli::add_stage_commands() {
  stage_command("run", "run the stages listed in run.stages");
  convert_ = stage_command("convert", "GGUF or HF checkpoint -> HF directory (config.json, safetensors, tokenizer)");
  convert_->add_option("--in", in_, "model to convert (sets model.path)");
  convert_->add_option("--out", out_, "HF directory to write (sets convert.out)");
  eval_ = stage_command("eval", "perplexity (eval.windows), zero-shot tasks (eval.tasks), speed (eval.speed)");
  eval_->add_option("--compare", compare_, "two or more run directories: their final results side by side, "
                    "with each one's ratio to the first")
      ->expected(2, 1 << 16);
  eval_->add_option("--out", out_, "with --compare: also write the table to this file");
  stage_command("prune", "score, decide, remove and export (prune.*, calibration.*; prune.scores reuses a score run)");
  stage_command("score", "calibrate once and write the statistics of prune.criterion (score.out) for prune.scores");
  stage_command("gum", "training-time MLP neuron pruning: GUM, movement, gradual random/magnitude (gum.*, recover.*)");
  stage_command("sparse", "unstructured pruning while training: RPP or iterative magnitude (sparse.*, recover.*)");
  stage_command("report", "redundancy of the MLP neurons: sensitivity, uniqueness, reconstructability (report.*)");
  stage_command("recover", "LoRA or full fine-tuning of model.path, with checkpoints (recover.*)");
  stage_command("generate", "generate text from generate.prompt (greedy or top-p)");
}

void Cli::add_tokenize() {
  tok_ = app_.add_subcommand("tokenize", "write the token ids of a text as little-endian int32");
  tok_->add_option("--tokenizer", in_, "a .gguf file or an HF directory")->required();
  tok_->add_option("--text", text_, "austen:<novel> or a UTF-8 file")->required();
  tok_->add_option("--out", out_, "output file")->required();
  tok_->add_option("--text-out", text_out_, "also write the text exactly as it was tokenized");
}

void Cli::add_init() {
  init_ = app_.add_subcommand("init", "write a random-weight HF checkpoint of a model's shape, piece by piece");
  init_->add_option("--shape", init_opt_.shape, "a config.json (or its directory) or one of: " + model::shape_names())
      ->required();
  init_->add_option("--out", init_opt_.out, "HF directory to write")->required();
  init_->add_option("--dtype", init_opt_.dtype, "float32 | bfloat16 | float16");
  init_->add_option("--shards", init_opt_.shards, "at most this many safetensors files");
  init_->add_option("--tokenizer", init_opt_.tokenizer, "an HF directory or .gguf whose tokenizer to include");
  init_->add_option("--seed", init_opt_.seed, "seed of the random weights");

  memory_ = app_.add_subcommand("memory", "the predicted peak memory per rank of a prune (and a recovery), per TP size");
  memory_->add_option("--shape", mem_.shape, "a config.json, a model, or one of: " + model::shape_names())->required();
  memory_->add_option("--tp", mem_.tp, "tensor-parallel sizes");
  memory_->add_option("--dp", mem_.dp, "data-parallel size (the calibration samples are split over it)");
  memory_->add_option("--dtype", mem_.dtype, "float32 | bfloat16 | float16");
  memory_->add_option("--samples", mem_.samples, "calibration.samples");
  memory_->add_option("--seq", mem_.seq, "calibration.seq_len");
  memory_->add_option("--recompute", mem_.recompute, "calibration.recompute (true | false)");
  memory_->add_option("--ratio", mem_.ratio, "prune.ratio");
  memory_->add_option("--criterion", mem_.criterion, "prune.criterion");
  memory_->add_option("--scope", mem_.scope, "prune.scope");
  memory_->add_option("--recover", mem_.recover, "also recovery after the prune: lora | full | lora_kd | full_kd");
  memory_->add_option("--micro-batch", mem_.micro_batch, "recover.micro_batch");
  memory_->add_option("--train-seq", mem_.train_seq, "recover.seq_len");
  memory_->add_option("--lora-rank", mem_.lora_rank, "recover.lora_rank");
  memory_->add_option("--base-mib", mem_.base_mib, "the process's own resident memory before a model is loaded");
  memory_->add_option("--out", mem_.out, "JSON file to write");
}

void Cli::add_benches() {
  auto* bench = app_.add_subcommand("bench", "benchmarks that write JSON");
  bench->require_subcommand(1);
  bench_fwd_ = bench->add_subcommand("forward", "prefill tokens/s, decode steps/s and peak RSS of a dense model");
  bench_fwd_->add_option("--model", bf_.model, "a .gguf file or an HF directory")->required();
  bench_fwd_->add_option("--batch", bf_.batch, "sequences per forward");
  bench_fwd_->add_option("--seq", bf_.seq, "tokens per sequence");
  bench_fwd_->add_option("--iters", bf_.iters, "timed passes after one warm-up (the median is reported)");
  bench_fwd_->add_option("--decode", bf_.decode, "also time this many greedy KV-cached steps after a prefill");
  bench_fwd_->add_option("--threads", bf_.threads, "intra-op threads (0 = all cores)");
  bench_fwd_->add_option("--dtype", bf_.dtype, "float32 | bfloat16");
  bench_fwd_->add_option("--device", bf_.device, "cpu | cuda");
  bench_fwd_->add_option("--out", bf_.out, "JSON file to write");
  bench_fwd_->add_flag("--backward", bf_.backward, "also run backward of the summed NLL (weights require grad)");

  bench_prune_ = bench->add_subcommand("prune", "whole `secateur prune` processes per criterion against the floor "
                                       "(load + one forward+backward over the calibration's tokens)");
  bench_prune_->add_option("--model", bp_.model, "a .gguf file or an HF directory");
  bench_prune_->add_option("--criteria", bp_.criteria, "prune.criterion values to measure");
  bench_prune_->add_option("--set", bp_.overrides, "more key=value for every prune (e.g. prune.ratio=0.5)");
  bench_prune_->add_option("--rounds", bp_.rounds, "alternating rounds; the median is reported");
  bench_prune_->add_option("--threads", bp_.threads, "intra-op threads of every process");
  bench_prune_->add_option("--out", bp_.out, "JSON file to write");
  bench_comm_ = bench->add_subcommand("comm", "all-reduce / all-gather bandwidth over the world, TP and DP groups");
  bench_comm_->add_option("--sizes", bc_.sizes_bytes, "message sizes in bytes");
  bench_comm_->add_option("--iters", bc_.iters, "timed iterations per size");
  bench_comm_->add_option("--tp", bc_.tp, "tensor-parallel size of the grid");
  bench_comm_->add_option("--out", bc_.out, "JSON file to write (rank 0)");
  bench_comm_->add_option("--device", bc_device_, "cpu (MPI) | cuda (NCCL)");

  bench_train_ = bench->add_subcommand("train", "recovery-training tokens/s and MFU: LoRA, LoRA + KD, full");
  bench_train_->add_option("--model", bt_.model, "a .gguf file, an HF directory, or random:<shape> (" + model::shape_names() + ")")->required();
  bench_train_->add_option("--methods", bt_.methods, "lora, lora_kd, full, full_kd");
  bench_train_->add_option("--steps", bt_.steps, "timed steps (after one warm-up step); the median is reported");
  bench_train_->add_option("--batch", bt_.batch, "sequences per step, all DP ranks together");
  bench_train_->add_option("--micro-batch", bt_.micro_batch, "sequences per forward/backward on one rank");
  bench_train_->add_option("--seq", bt_.seq, "tokens per sequence");
  bench_train_->add_option("--threads", bt_.threads, "intra-op threads (0 = all cores)");
  bench_train_->add_option("--dtype", bt_.dtype, "float32 | bfloat16");
  bench_train_->add_option("--device", bt_.device, "cpu | cuda");
  bench_train_->add_option("--peak-n", bt_.peak_n, "size of the square matmul that measures the peak");
  bench_train_->add_option("--tp", bt_.tp, "tensor-parallel size of the grid");
  bench_train_->add_option("--out", bt_.out, "JSON file to write (rank 0)");
}

void Cli::add_sweep() {
  sweep_ = app_.add_subcommand("sweep", "run the points of a sweep.yaml here and collect them (sweep.csv/json/md)");
  sweep_->add_option("file", sweep_file_, "the sweep: config, dir, parallel, set, grid, points (tools/secateur/sweep.h)");
  sweep_->add_option("--parallel", sweep_parallel_, "points at a time (overrides the file's 'parallel')");
  sweep_->add_option("--collect", collect_, "only gather the points under this directory into sweep.csv/json/md");
  sweep_->add_option("--list", sweep_list_, "print one line per run for launch/slurm/sweep.sbatch: points | scores");
  sweep_->add_flag("--slurm", sweep_slurm_, "submit the sweep as Slurm job arrays instead of running it here");
  sweep_->add_option("--sbatch", sweep_sbatch_, "with --slurm: more sbatch options for every job, one string "
                     "(\"--partition=gpu --time=02:00:00\")");
}

int Cli::sweep() const {
  log::init(0, 1, "info");
  if (!collect_.empty()) {
    std::cout << tools::collect_sweep(collect_);
    tools::plot_sweep(collect_, tools::self_exe());
    return 0;
  }
  SECATEUR_CHECK(!sweep_file_.empty(), "[sweep] give a sweep.yaml (or --collect DIR)");
  tools::Sweep s = tools::load_sweep(sweep_file_);
  if (!sweep_list_.empty()) {
    SECATEUR_CHECK(sweep_list_ == "points" || sweep_list_ == "scores", "[sweep] --list {}: points or scores", sweep_list_);
    std::cout << tools::sweep_lines(s, sweep_list_ == "scores");
    return 0;
  }
  if (sweep_parallel_ > 0) s.parallel = sweep_parallel_;
  const std::string exe = tools::self_exe();
  if (sweep_slurm_) {
    std::vector<std::string> extra;
    std::istringstream words(sweep_sbatch_);
    for (std::string w; words >> w;) extra.push_back(w);
    return tools::submit_sweep(s, exe, extra);
  }
  const int rc = tools::run_sweep(s, exe);
  tools::plot_sweep(s.dir, exe);
  return rc;
}

int Cli::tokenize() const {
  const auto cfg = config::Config::load("");
  const std::string content = text::read_text(text_, cfg.get<std::string>("data.austen"));
  const auto ids = io::load_tokenizer(in_).encode(content, /*parse_special=*/false);
  if (!text_out_.empty()) io::write_file_atomic(text_out_, content);
  io::write_file_atomic(out_, std::string_view(reinterpret_cast<const char*>(ids.data()), ids.size() * 4));
  std::cout << ids.size() << " tokens -> " << out_ << "\n";
  return 0;
}

int Cli::dispatch(int* argc, char*** argv) {
  if (*eval_ && !compare_.empty()) {
    const std::string table = tools::compare_runs(compare_);
    std::cout << table;
    if (!out_.empty()) io::write_file_atomic(out_, table);
    return 0;
  }
  for (CLI::App* c : stage_commands_) {
    if (!*c) continue;
    const std::string name = c->get_name();
    std::vector<std::string> extra;
    if (c == convert_ && !in_.empty()) extra.push_back("model.path=" + in_);
    if (c == convert_ && !out_.empty()) extra.push_back("convert.out=" + out_);
    if (!profile_.empty()) extra.push_back("run.profile=" + profile_);
    const config::Config cfg = resolve(args_, extra);
    const auto stages = name == "run" ? cfg.get<std::vector<std::string>>("run.stages") : std::vector<std::string>{name};
    return run_pipeline(cfg, name, stages, argc, argv);
  }
  if (*bench_comm_) {
    config::check_choice(config::choices::device, "--device", bc_device_);
    return on_grid(bc_.tp, bc_device_ == "cuda" ? c10::DeviceType::CUDA : c10::DeviceType::CPU, argc, argv,
                   [&](parallel::Grid& g) { return parallel::bench_comm(g, bc_); });
  }
  if (*bench_train_) {
    return on_grid(bt_.tp, bt_.device == "cuda" ? c10::DeviceType::CUDA : c10::DeviceType::CPU, argc, argv,
                   [&](parallel::Grid& g) { return tools::bench_train(g, bt_); });
  }
  if (*bench_fwd_) return tools::bench_forward(bf_);
  if (*bench_prune_) return tools::bench_prune(bp_);
  if (*tok_) return tokenize();
  if (*init_) {
    log::init(0, 1, "info");
    return tools::init_checkpoint(init_opt_);
  }
  if (*memory_) return tools::memory_report(mem_);
  if (*sweep_) return sweep();
  if (*env_) std::cout << parallel::format_report(parallel::describe_devices()) << "\n";
  return 0;
}

// One line, and on a multi-rank job the whole job goes down with it (MPI_Abort), never a hang.
// Errors in the config, the grid or the checkpoint hit every rank alike: ranks other than 0 wait
// a moment so that rank 0's abort usually ends the job first and its line is the only one.
int fail(const std::exception& e) {
  const auto [rank, world] = log::rank_from_env();
  if (world > 1) {
    if (rank != 0) std::this_thread::sleep_for(std::chrono::seconds(3));
    parallel::abort_job(std::string("secateur: error: ") + e.what());
  }
  std::cerr << "secateur: error: " << e.what() << std::endl;
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  // Past a file-size limit (ulimit -f) a write fails with EFBIG and becomes one error line naming
  // the file, instead of SIGXFSZ ending the process with nothing said.
  std::signal(SIGXFSZ, SIG_IGN);
  Cli cli;
  CLI11_PARSE(cli.app(), argc, argv);
  try {
    return cli.dispatch(&argc, &argv);
  } catch (const std::exception& e) {
    return fail(e);
  }
}
