// train-demo: a small libtorch training run that checkpoints with ckptio, can be killed in the
// middle of a save, resumes bit-exactly, and serves its EMA weights for inference.
//
//   train-demo --out DIR [--steps N --ckpt-every K --keep N --async --snapshot copy|borrow
//              --resume auto|none|PATH --seed S --kill-at-step K]
//   train-demo --compare CKPT_A CKPT_B     exit 0 when model, EMA, optimizer, LR scheduler and
//                                          sampler state are bit-identical, 1 otherwise
//   train-demo --infer CKPT                strict-load the EMA into a fresh model and sample
//
// Machine-readable lines ("loss step=.. value=..", "checkpoint step=.. blocking_ms=..", ...) go to
// the --log file for examples/demo.sh; the terminal gets a progress bar (or plain lines when stdout
// is not a terminal).
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <signal.h>
#include <torch/torch.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <optional>
#include <thread>

#include "ckptio/checkpoint_io.h"
#include "ckptio/error.h"
#include "ckptio/sampler.h"
#include "ckptio/torch.h"
#include "denoiser.h"
#include "strict_weights.h"

namespace {

namespace fs = std::filesystem;
namespace lt = ckptio::libtorch;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

struct Flags {
  std::string out;
  int64_t steps = 200;
  int64_t ckpt_every = 25;
  int64_t keep = 3;
  bool async = false;
  std::string snapshot = "copy";
  std::string resume = "none";
  uint64_t seed = 0;
  int64_t kill_at_step = 0;
  // Size of the run. The defaults (a 0.63M-parameter model, 8 sequences of 16 tokens per step) keep
  // `make demo` under 3 minutes on 2 cores with Debian's libtorch, which uses the reference BLAS.
  int64_t batch_size = 8;
  int64_t dataset_size = 2048;
  double lr = 1e-3;
  int64_t warmup = 20;
  double ema_decay = 0.99;
  int threads = 2;
  bool fsync = true;
  std::string log;
  demo::DenoiserConfig model;
  // Other modes.
  std::vector<std::string> compare;
  std::string infer;
};

// One line per event in the --log file (appended: a killed run and its resumption share it).
class EventLog {
 public:
  explicit EventLog(const std::string& path) {
    if (!path.empty()) out_.open(path, std::ios::app);
  }
  void write(const std::string& line) {
    if (out_.is_open()) {
      out_ << line << '\n';
      out_.flush();
    }
  }

 private:
  std::ofstream out_;
};

// A progress bar on a terminal; plain lines every `every` steps otherwise.
class Progress {
 public:
  Progress(int64_t total, int64_t every) : total_(total), every_(every), tty_(isatty(1) != 0) {}

  void step(int64_t done, double loss, double lr) {
    if (tty_) {
      const int width = 30;
      const int filled = static_cast<int>(width * done / std::max<int64_t>(1, total_));
      std::string bar(static_cast<size_t>(filled), '#');
      bar.resize(width, '.');
      std::printf("\r  [%s] step %4lld/%lld  loss %.4f  lr %.2e ", bar.c_str(),
                  static_cast<long long>(done), static_cast<long long>(total_), loss, lr);
      std::fflush(stdout);
      dirty_ = true;
    } else if (done % every_ == 0 || done == total_) {
      std::printf("  step %lld/%lld loss %.4f lr %.2e\n", static_cast<long long>(done),
                  static_cast<long long>(total_), loss, lr);
      std::fflush(stdout);
    }
  }
  // A line of its own, above the bar.
  void note(const std::string& text) {
    if (tty_ && dirty_) std::printf("\r\033[K");
    std::printf("  %s\n", text.c_str());
    std::fflush(stdout);
    dirty_ = false;
  }
  void finish() {
    if (tty_ && dirty_) std::printf("\n");
    dirty_ = false;
  }

 private:
  int64_t total_;
  int64_t every_;
  bool tty_;
  bool dirty_ = false;
};

// The synthetic dataset: each sample is a few sinusoids across tokens with per-channel phases,
// fully determined by the seed.
torch::Tensor make_dataset(const Flags& f, uint64_t salt) {
  auto gen = at::detail::createCPUGenerator(f.seed * 7919 + salt);
  const auto& c = f.model;
  auto opts = torch::TensorOptions().dtype(torch::kFloat);
  auto freq = at::rand({f.dataset_size, 3, 1, 1}, gen, opts) * 0.8 + 0.1;
  auto amp = at::rand({f.dataset_size, 3, 1, 1}, gen, opts) + 0.25;
  auto phase = at::rand({f.dataset_size, 3, 1, c.channels}, gen, opts) * 6.2831853;
  auto pos = torch::arange(c.tokens, opts).view({1, 1, c.tokens, 1});
  return (amp * torch::sin(freq * pos + phase)).sum(1) / 2.0;  // [N, tokens, channels]
}

// Noise and diffusion times of one step depend only on (seed, step), so a resumed run draws the
// same ones as an uninterrupted run.
struct NoisyBatch {
  torch::Tensor input, t, target;
};
NoisyBatch noisy_batch(const torch::Tensor& x0, uint64_t seed, int64_t step) {
  auto gen = at::detail::createCPUGenerator(seed * 1000003 + static_cast<uint64_t>(step) + 1);
  auto t = at::rand({x0.size(0)}, gen, x0.options());
  auto noise = at::randn(x0.sizes(), gen, x0.options());
  auto tt = t.view({-1, 1, 1});
  return {(1 - tt) * x0 + tt * noise, t, noise - x0};
}

json model_config_json(const demo::DenoiserConfig& c) {
  return json{{"channels", c.channels}, {"tokens", c.tokens}, {"dim", c.dim},
              {"depth", c.depth},       {"heads", c.heads}};
}

int64_t count_parameters(demo::Denoiser& model) {
  int64_t n = 0;
  for (const auto& p : model->parameters()) n += p.numel();
  return n;
}

// SIGKILLs this process in the middle of the save of step `step`: shortly after it starts writing
// files, and at the latest when it is about to write the manifest (so the checkpoint is never
// committed). It looks at which save a phase belongs to: with async saves, save(K) first waits for
// save(K - every), whose last phases are reported from inside save(K).
class SaveKiller {
 public:
  explicit SaveKiller(int64_t step) : step_(step) {}
  void on_phase(ckptio::SavePhase phase, const ckptio::SaveInfo& save) const {
    if (step_ <= 0 || save.global_step != step_) return;
    if (phase == ckptio::SavePhase::WriteFiles) {
      std::thread([] {
        std::this_thread::sleep_for(std::chrono::milliseconds(3));
        kill(getpid(), SIGKILL);
      }).detach();
    } else if (phase == ckptio::SavePhase::WriteManifest) {
      kill(getpid(), SIGKILL);
    }
  }

 private:
  int64_t step_;
};

int train(const Flags& f) {
  torch::set_num_threads(f.threads);
  EventLog log(f.log);
  if (f.snapshot != "copy" && f.snapshot != "borrow") {
    throw ckptio::Error(ckptio::ErrorCode::InvalidArgument, "--snapshot is copy or borrow");
  }
  const bool borrow = f.snapshot == "borrow";

  torch::manual_seed(f.seed);
  demo::Denoiser model(f.model);
  lt::Ema ema(*model);
  torch::optim::AdamW optimizer(model->parameters(),
                                torch::optim::AdamWOptions(f.lr).weight_decay(0.01));
  lt::WarmupCosineLR scheduler(optimizer, {f.warmup, f.steps, f.lr * 0.1});
  ckptio::ResumableSampler sampler(static_cast<uint64_t>(f.dataset_size), f.seed);
  const torch::Tensor data = make_dataset(f, 0);

  const SaveKiller killer(f.kill_at_step);
  ckptio::CheckpointOptions options;
  options.keep_n_latest = static_cast<size_t>(f.keep);
  options.async = f.async;
  options.snapshot = borrow ? ckptio::SnapshotMode::Borrow : ckptio::SnapshotMode::Copy;
  options.sync = f.fsync;
  options.on_phase = [&killer](ckptio::SavePhase phase, const ckptio::SaveInfo& save) {
    killer.on_phase(phase, save);
  };
  ckptio::CheckpointIO ckpt(f.out, options);

  const char* mode = !f.async ? "sync" : borrow ? "async borrow" : "async copy";
  std::printf("  model: DiT-like denoiser, %lld parameters; AdamW, warmup+cosine LR, EMA %.3g; "
              "%s saves every %lld steps\n",
              static_cast<long long>(count_parameters(model)), f.ema_decay, mode,
              static_cast<long long>(f.ckpt_every));

  int64_t start = 0;
  if (f.resume != "none") {
    const bool have = f.resume != "auto" || ckpt.latest().has_value();
    if (have) {
      ckptio::TensorMap model_targets = lt::module_targets(*model);
      ckptio::TensorMap ema_targets = ema.targets();
      ckptio::OptimizerState optimizer_state;
      std::string scheduler_state, sampler_state;
      ckptio::LoadTargets targets{&model_targets, &ema_targets, &optimizer_state,
                                  &scheduler_state, &sampler_state};
      const auto result = ckpt.load(f.resume == "auto" ? "latest" : f.resume, targets);
      const json trained_with = json::parse(result.extra).value("model", json());
      if (trained_with != model_config_json(f.model)) {
        throw ckptio::Error(ckptio::ErrorCode::Mismatch,
                            fmt::format("{} was trained with model {}, not {}",
                                        result.path.string(), trained_with.dump(),
                                        model_config_json(f.model).dump()));
      }
      lt::load_optimizer_state(optimizer, optimizer_state);
      scheduler.load_state(scheduler_state);
      sampler.load_state(sampler_state);
      start = result.running.global_step;
      std::printf("  resumed from %s (epoch %lld, global_step %lld)\n", result.path.string().c_str(),
                  static_cast<long long>(result.running.epoch), static_cast<long long>(start));
      log.write(fmt::format("resumed path={} epoch={} global_step={}", result.path.string(),
                            result.running.epoch, start));
    } else {
      std::printf("  no checkpoint in %s yet: starting from scratch\n", f.out.c_str());
    }
  }

  Progress progress(f.steps, std::max<int64_t>(1, f.steps / 10));
  fs::path last_saved;
  int64_t last_saved_step = -1;
  auto save = [&](int64_t global_step) {
    ckptio::TrainingState state;
    state.model = lt::module_state(*model, ckptio::SnapshotMode::Borrow);
    state.ema = ema.state(ckptio::SnapshotMode::Borrow);
    state.optimizer = lt::optimizer_state(optimizer, ckptio::SnapshotMode::Borrow);
    state.lr_scheduler = scheduler.state();
    state.sampler = sampler.state();
    state.running.epoch = static_cast<int64_t>(sampler.epoch());
    state.running.step = static_cast<int64_t>(sampler.position()) / f.batch_size;
    state.running.global_step = global_step;
    state.running.batch_size = f.batch_size;
    state.running.actual_update_step = global_step;
    state.extra = json{{"model", model_config_json(f.model)}, {"seed", f.seed}}.dump();
    const auto begin = Clock::now();
    last_saved = ckpt.save(state);
    const double blocking = ms_since(begin);
    last_saved_step = global_step;
    progress.note(fmt::format("checkpoint {} ({}, save() blocked {:.1f} ms)",
                              last_saved.filename().string(), mode, blocking));
    log.write(fmt::format("checkpoint step={} mode={} blocking_ms={:.3f} path={}", global_step,
                          f.async ? (borrow ? "async-borrow" : "async-copy") : "sync", blocking,
                          last_saved.string()));
  };

  double wait_ms = 0;
  for (int64_t step = start; step < f.steps; ++step) {
    const auto indices = sampler.next_batch(static_cast<size_t>(f.batch_size));
    const auto x0 = data.index_select(0, torch::tensor(indices, torch::kLong));
    const NoisyBatch batch = noisy_batch(x0, f.seed, step);
    auto loss = torch::mse_loss(model(batch.input, batch.t), batch.target);
    optimizer.zero_grad();
    loss.backward();
    if (borrow) {
      // The borrowed tensors of an async save must not change before it is done.
      const auto begin = Clock::now();
      ckpt.wait();
      wait_ms += ms_since(begin);
    }
    optimizer.step();
    scheduler.step();
    ema.update(*model, f.ema_decay);
    const double loss_value = loss.item<double>();
    const double lr = optimizer.param_groups()[0].options().get_lr();
    progress.step(step + 1, loss_value, lr);
    if ((step + 1) % std::max<int64_t>(1, f.steps / 10) == 0 || step == start) {
      log.write(fmt::format("loss step={} value={:.6f}", step + 1, loss_value));
    }
    if (f.ckpt_every > 0 && (step + 1) % f.ckpt_every == 0) save(step + 1);
  }
  if (last_saved_step != f.steps && start < f.steps) save(f.steps);
  ckpt.wait();
  progress.finish();
  if (borrow) {
    log.write(fmt::format("borrow_wait_ms total={:.3f}", wait_ms));
  }
  const auto latest = ckpt.latest();
  const fs::path final_path = latest ? latest->path : last_saved;
  std::printf("final checkpoint: %s\n", final_path.string().c_str());
  log.write(fmt::format("final path={}", final_path.string()));
  return 0;
}

// Loads every component of a checkpoint folder into owned tensors.
struct Loaded {
  ckptio::TensorMap model, ema;
  ckptio::OptimizerState optimizer;
  std::string lr_scheduler, sampler;  // JSON text
  ckptio::RunningStates running;
};

Loaded load_all(const fs::path& path) {
  Loaded l;
  ckptio::LoadTargets targets{&l.model, &l.ema, &l.optimizer, &l.lr_scheduler, &l.sampler};
  l.running = ckptio::load_checkpoint_folder(path, targets).running;
  return l;
}

// Names of the tensors that differ in bytes, dtype or shape (or exist on one side only).
std::vector<std::string> differing(const ckptio::TensorMap& a, const ckptio::TensorMap& b) {
  std::vector<std::string> out;
  for (const auto& [name, t] : a) {
    auto it = b.find(name);
    if (it == b.end() || it->second.dtype() != t.dtype() || it->second.shape() != t.shape() ||
        !std::equal(t.bytes().begin(), t.bytes().end(), it->second.bytes().begin(),
                    it->second.bytes().end())) {
      out.push_back(name);
    }
  }
  for (const auto& [name, t] : b) {
    if (!a.count(name)) out.push_back(name);
  }
  return out;
}

int compare(const fs::path& a_path, const fs::path& b_path) {
  const Loaded a = load_all(a_path);
  const Loaded b = load_all(b_path);
  bool same = true;
  auto report = [&same](const std::string& what, size_t total, const std::vector<std::string>& diff) {
    if (diff.empty()) {
      std::printf("  %-13s bit-identical (%zu tensors)\n", what.c_str(), total);
    } else {
      same = false;
      std::printf("  %-13s DIFFERENT: %zu of %zu tensors, first %s\n", what.c_str(), diff.size(),
                  total, diff.front().c_str());
    }
  };
  auto report_json = [&same](const std::string& what, const std::string& x_text,
                             const std::string& y_text) {
    const json x = json::parse(x_text), y = json::parse(y_text);
    const bool eq = x == y;
    same = same && eq;
    std::printf("  %-13s %s\n", what.c_str(), eq ? "identical" : "DIFFERENT");
    if (!eq) std::printf("    %s\n    %s\n", x.dump().c_str(), y.dump().c_str());
  };
  report("model", a.model.size(), differing(a.model, b.model));
  report("ema", a.ema.size(), differing(a.ema, b.ema));
  std::vector<std::string> optimizer_diff;
  size_t optimizer_total = 0;
  for (const auto& [param, tensors] : a.optimizer.tensors) {
    optimizer_total += tensors.size();
    auto it = b.optimizer.tensors.find(param);
    const auto d = differing(tensors, it == b.optimizer.tensors.end() ? ckptio::TensorMap{}
                                                                      : it->second);
    for (const auto& name : d) optimizer_diff.push_back("state." + param + "." + name);
  }
  if (a.optimizer.tensors.size() != b.optimizer.tensors.size()) {
    optimizer_diff.push_back("(parameter count)");
  }
  report("optimizer", optimizer_total, optimizer_diff);
  report_json("optimizer.json", a.optimizer.meta, b.optimizer.meta);
  report_json("lr_scheduler", a.lr_scheduler, b.lr_scheduler);
  report_json("sampler", a.sampler, b.sampler);
  const bool running_same = a.running.epoch == b.running.epoch &&
                            a.running.global_step == b.running.global_step &&
                            a.running.step == b.running.step;
  same = same && running_same;
  std::printf("  %-13s %s (epoch %lld, global_step %lld)\n", "running", running_same ? "identical" : "DIFFERENT",
              static_cast<long long>(a.running.epoch),
              static_cast<long long>(a.running.global_step));
  std::printf("%s\n", same ? "RESULT: bit-identical" : "RESULT: different");
  return same ? 0 : 1;
}

// Mean squared velocity error on held-out samples with fixed noise.
double heldout_loss(demo::Denoiser& model, const Flags& f) {
  torch::NoGradGuard no_grad;
  Flags g = f;
  g.dataset_size = 256;
  const torch::Tensor x0 = make_dataset(g, 1);  // samples never seen in training
  double total = 0;
  for (int64_t i = 0; i < 4; ++i) {
    const NoisyBatch b = noisy_batch(x0, f.seed + 17, i);
    total += torch::mse_loss(model(b.input, b.t), b.target).item<double>();
  }
  return total / 4;
}

// Euler integration of the learned velocity from noise (t = 1) to data (t = 0); returns the mean
// distance of each sample to its nearest training sample.
double sample_distance(demo::Denoiser& model, const Flags& f, const torch::Tensor& data) {
  torch::NoGradGuard no_grad;
  auto gen = at::detail::createCPUGenerator(f.seed + 99);
  auto x = at::randn({8, f.model.tokens, f.model.channels}, gen, data.options());
  const int steps = 20;
  for (int i = 0; i < steps; ++i) {
    const double t = 1.0 - static_cast<double>(i) / steps;
    x = x - (1.0 / steps) * model(x, torch::full({8}, t));
  }
  auto d = torch::cdist(x.flatten(1), data.flatten(1));  // [8, N]
  return (std::get<0>(d.min(1)).pow(2) / static_cast<double>(x[0].numel())).mean().item<double>();
}

int infer(const Flags& f) {
  torch::set_num_threads(f.threads);
  torch::manual_seed(f.seed + 1);  // a fresh model, different from any trained one
  demo::Denoiser fresh(f.model);
  demo::Denoiser model(f.model);
  const torch::Tensor data = make_dataset(f, 0);
  const double fresh_loss = heldout_loss(fresh, f);
  const double fresh_dist = sample_distance(fresh, f, data);
  ckptio::TensorMap targets = lt::module_targets(*model);
  const auto begin = Clock::now();
  const std::string summary = demo::load_weights_strict(f.infer, targets);
  std::printf("  load_checkpoint (strict, EMA weights): %s, %.1f ms\n", summary.c_str(),
              ms_since(begin));
  model->eval();
  const double loss = heldout_loss(model, f);
  const double dist = sample_distance(model, f, data);
  std::printf("  held-out denoising loss: EMA model %.4f, untrained model %.4f\n", loss, fresh_loss);
  std::printf("  20-step samples, mean squared distance to the nearest training sample: EMA model "
              "%.4f, untrained model %.4f\n",
              dist, fresh_dist);
  std::printf("infer heldout_loss=%.6f untrained=%.6f sample_distance=%.6f untrained_distance=%.6f\n",
              loss, fresh_loss, dist, fresh_dist);
  return 0;
}

// A whole-number flag of at least `min`. (CLI11's PositiveNumber and NonNegativeNumber print their
// upper limit as DBL_MAX in full, and an unsigned flag silently wraps "-1" to 2^64-1.)
CLI::Validator whole_number(int64_t min) {
  const std::string rule = min > 0 ? "a positive whole number" : "a whole number, 0 or more";
  return CLI::Validator(
      [min, rule](std::string& value) -> std::string {
        int64_t v = 0;
        const char* end = value.data() + value.size();
        const auto [ptr, ec] = std::from_chars(value.data(), end, v);
        if (ec != std::errc() || ptr != end || v < min) return "must be " + rule + ", not " + value;
        return {};
      },
      min > 0 ? "POSITIVE" : "NON-NEGATIVE");
}

}  // namespace

int main(int argc, char** argv) {
  Flags f;
  CLI::App app{"ckptio training demo: checkpoint, crash, resume bit-exactly, serve the EMA"};
  app.add_option("--out", f.out, "experiment folder (checkpoints go here)");
  app.add_option("--steps", f.steps, "optimizer steps in total")->check(whole_number(1));
  app.add_option("--ckpt-every", f.ckpt_every, "save every K steps (0: only at the end)")
      ->check(whole_number(0));
  app.add_option("--keep", f.keep, "keep the N newest checkpoints (0: all)")
      ->check(whole_number(0));
  app.add_flag("--async", f.async, "save in the background");
  app.add_option("--snapshot", f.snapshot, "async snapshot mode")
      ->check(CLI::IsMember({"copy", "borrow"}));
  app.add_option("--resume", f.resume, "auto (latest committed checkpoint), none, or a folder");
  app.add_option("--seed", f.seed, "seed of the data, the model and the noise")
      ->check(whole_number(0));
  app.add_option("--kill-at-step", f.kill_at_step,
                 "SIGKILL this process in the middle of the save at step K")
      ->check(whole_number(0));
  app.add_option("--batch-size", f.batch_size)->check(whole_number(1));
  app.add_option("--dataset-size", f.dataset_size)->check(whole_number(1));
  app.add_option("--lr", f.lr);
  app.add_option("--warmup", f.warmup)->check(whole_number(0));
  app.add_option("--ema-decay", f.ema_decay);
  app.add_option("--threads", f.threads, "libtorch intra-op threads (fixed for reproducibility)")
      ->check(whole_number(1));
  app.add_option("--dim", f.model.dim)->check(whole_number(1));
  app.add_option("--depth", f.model.depth)->check(whole_number(1));
  app.add_option("--heads", f.model.heads)->check(whole_number(1));
  app.add_option("--tokens", f.model.tokens)->check(whole_number(1));
  app.add_option("--channels", f.model.channels)->check(whole_number(1));
  bool no_fsync = false;
  app.add_flag("--no-fsync", no_fsync, "skip fsync (tests only: a crash may lose data)");
  app.add_option("--log", f.log, "append machine-readable event lines to this file");
  app.add_option("--compare", f.compare, "compare two checkpoint folders bit for bit")
      ->expected(2);
  app.add_option("--infer", f.infer, "load the EMA of a checkpoint (strict) and sample");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help exits 0; every usage error exits 2 (CLI11's own codes are 100 and up).
    return app.exit(e) == 0 ? 0 : 2;
  }
  f.fsync = !no_fsync;
  try {
    if (!f.compare.empty()) return compare(f.compare[0], f.compare[1]);
    if (!f.infer.empty()) return infer(f);
    if (f.out.empty()) {
      std::fprintf(stderr, "train-demo: --out is required\n");
      return 2;
    }
    return train(f);
  } catch (const ckptio::Error& e) {
    std::fprintf(stderr, "\ntrain-demo: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\ntrain-demo: error: %s\n", e.what());
    return 1;
  }
}
