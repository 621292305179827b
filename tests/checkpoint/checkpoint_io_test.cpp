// CheckpointIO round trips, layout, async modes, replace, pruning, latest fallback, strict loads.
#include <gtest/gtest.h>

#include <condition_variable>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <system_error>

#include "checkpoint/catalog.h"
#include "checkpoint/file_hash.h"
#include "core/thread_start.h"
#include "io/write_backends.h"
#include "checkpoint/training_state_fixture.h"
#include "ckptio/checkpoint_io.h"
#include "ckptio/sharded.h"
#include "ckptio/error.h"
#include "ckptio/safetensors.h"
#include "ckptio/sharded.h"
#include "support/test_util.h"

namespace ckptio {
namespace {

namespace fs = std::filesystem;
using testing::expect_checkpoint_equals;
using testing::make_training_state;
using testing::TempDir;

CheckpointOptions quiet_options() {
  CheckpointOptions o;
  o.sync = false;
  o.warn = [](const std::string&) {};
  return o;
}

ErrorCode code_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.code();
  }
  ADD_FAILURE() << "no ckptio::Error thrown";
  return ErrorCode::Internal;
}

TEST(CheckpointIO, SyncSaveWritesTheLayoutAndLoadsBack) {
  TempDir dir;
  CheckpointOptions o;  // fsync on: the default path
  CheckpointIO io(dir.path(), o);
  const TrainingState s = make_training_state(7);
  const fs::path p = io.save(s);
  EXPECT_EQ(p, dir.path() / "epoch0-global_step7");
  for (const char* f : {"model/model.safetensors", "ema.safetensors",
                        "optimizer/optimizer.safetensors", "optimizer/optimizer.json",
                        "lr_scheduler.json", "sampler.json", "running_states.json",
                        "ckptio.manifest.json"}) {
    EXPECT_TRUE(fs::is_regular_file(p / f)) << f;
  }
  const auto rs = nlohmann::json::parse(testing::read_file(p / "running_states.json"));
  EXPECT_EQ(rs["global_step"], 7);
  EXPECT_EQ(rs["actual_update_step"], 3);
  EXPECT_EQ(rs["batch_size"], 8);
  // The optimizer tensors are named like the seed's flattened state.
  auto reader = SafetensorsReader::open(p / "optimizer/optimizer.safetensors");
  EXPECT_NE(reader.find("state.0.exp_avg"), nullptr);
  EXPECT_NE(reader.find("state.4.step"), nullptr);
  // The manifest lists every other file with its size.
  const auto manifest = nlohmann::json::parse(testing::read_file(p / "ckptio.manifest.json"));
  EXPECT_EQ(manifest["files"].size(), 7u);
  EXPECT_EQ(manifest["files"]["ema.safetensors"]["size"], fs::file_size(p / "ema.safetensors"));
  EXPECT_EQ(manifest["files"]["ema.safetensors"]["xxh3_128"].get<std::string>().size(), 32u);
  expect_checkpoint_equals(io, "latest", s);
  expect_checkpoint_equals(io, p.string(), s);
  expect_checkpoint_equals(io, "epoch0-global_step7", s);
  const VerifyReport v = io.verify(p, VerifyDepth::Full);
  EXPECT_TRUE(v.ok);
  EXPECT_TRUE(v.checksums_checked);
  EXPECT_EQ(v.files, 7u);
}

// A durable save has the disk write each tensor file while the next bytes are still being copied
// (the writer starts the writeback behind itself); a save without fsync leaves the page cache
// alone.
TEST(CheckpointIO, DurableSaveStartsWritebackOfEveryTensorByte) {
  for (bool sync : {true, false}) {
    TempDir dir;
    testing::ObservingEnv observed(io::Env::posix());
    CheckpointOptions o = quiet_options();
    o.sync = sync;
    o.env = &observed;
    CheckpointIO io(dir.path(), o);
    const fs::path p = io.save(make_training_state(3));
    uint64_t tensor_bytes = 0;
    for (const char* f : {"model/model.safetensors", "ema.safetensors",
                          "optimizer/optimizer.safetensors"}) {
      tensor_bytes += fs::file_size(p / f);
    }
    EXPECT_EQ(observed.writeback_started.load(), sync ? tensor_bytes : 0) << "sync " << sync;
  }
}

TEST(CheckpointIO, ManifestChecksumsAreXxh3OfTheFileBytes) {
  // Known XXH3-128 test vector (empty input), canonical big-endian hex as xxh128sum prints it.
  EXPECT_EQ(checkpoint::xxh3_128_hex(std::string_view()), "99aa06d3014798d86001c324468d497f");
  TempDir dir;
  CheckpointIO io(dir.path(), quiet_options());
  const fs::path p = io.save(make_training_state(1));
  const auto manifest = nlohmann::json::parse(testing::read_file(p / "ckptio.manifest.json"));
  for (const auto& [rel, entry] : manifest["files"].items()) {
    EXPECT_EQ(entry["xxh3_128"], checkpoint::xxh3_128_hex(testing::read_file(p / rel))) << rel;
  }
}

TEST(CheckpointIO, ShardsPastMaxShardSize) {
  TempDir dir;
  CheckpointOptions o = quiet_options();
  o.max_shard_size = parse_size("40KB");
  CheckpointIO io(dir.path(), o);
  const TrainingState s = make_training_state(3);
  const fs::path p = io.save(s);
  EXPECT_FALSE(fs::exists(p / "model/model.safetensors"));
  const auto index =
      nlohmann::json::parse(testing::read_file(p / "model/model.safetensors.index.json"));
  uint64_t total = 0;
  for (const auto& [name, t] : *s.model) total += t.nbytes();
  EXPECT_EQ(index["metadata"]["total_size"], total);
  EXPECT_EQ(index["weight_map"]["embed.weight"], "model-00002-of-00003.safetensors");
  EXPECT_TRUE(fs::exists(p / "model/model-00001-of-00003.safetensors"));
  EXPECT_TRUE(fs::exists(p / "ema/ema.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(p / "ema.safetensors"));
  EXPECT_TRUE(fs::exists(p / "optimizer/optimizer.safetensors.index.json"));
  expect_checkpoint_equals(io, "latest", s);
  EXPECT_TRUE(io.verify(p, VerifyDepth::Full).ok);
}

TEST(CheckpointIO, AsyncCopyLetsTheCallerChangeTensorsRightAway) {
  TempDir dir;
  CheckpointOptions o = quiet_options();
  o.async = true;
  o.snapshot = SnapshotMode::Copy;
  CheckpointIO io(dir.path(), o);
  TrainingState s = make_training_state(5, 8);
  const TrainingState expected = make_training_state(5, 8);
  const fs::path p = io.save(s);
  // Scribble over every tensor the caller owns while the save may still be writing.
  for (auto* m : {&*s.model, &*s.ema}) {
    for (auto& [name, t] : *m) {
      for (auto& b : t.mutable_bytes()) b = std::byte{0x5a};
    }
  }
  for (auto& [param, m] : s.optimizer->tensors) {
    for (auto& [key, t] : m) {
      for (auto& b : t.mutable_bytes()) b = std::byte{0xa5};
    }
  }
  io.wait();
  EXPECT_TRUE(fs::exists(p / "ckptio.manifest.json"));
  expect_checkpoint_equals(io, "latest", expected);
  // A second save reuses the pool and saves the new values.
  TrainingState s2 = make_training_state(6, 8);
  io.save(s2);
  io.wait();
  expect_checkpoint_equals(io, "latest", make_training_state(6, 8));
  expect_checkpoint_equals(io, p.string(), expected);
}

TEST(CheckpointIO, AsyncBorrowSavesTheCallersMemory) {
  TempDir dir;
  CheckpointOptions o = quiet_options();
  o.async = true;
  o.snapshot = SnapshotMode::Borrow;
  std::vector<std::string> phases;
  o.on_phase = [&](SavePhase ph) { phases.emplace_back(save_phase_name(ph)); };
  CheckpointIO io(dir.path(), o);
  const TrainingState s = make_training_state(9, 4);
  io.save(s);
  io.wait();
  EXPECT_FALSE(io.busy());
  EXPECT_EQ(phases, (std::vector<std::string>{"write_files", "write_manifest", "commit", "prune",
                                              "done"}));
  expect_checkpoint_equals(io, "latest", s);
}

TEST(CheckpointIO, SavingAnExistingStepNeedsReplace) {
  TempDir dir;
  CheckpointIO io(dir.path(), quiet_options());
  io.save(make_training_state(4));
  TrainingState other = make_training_state(14);
  other.running = make_training_state(4).running;
  EXPECT_EQ(code_of([&] { io.save(other); }), ErrorCode::AlreadyExists);
  expect_checkpoint_equals(io, "latest", make_training_state(4));
  io.save(other, CheckpointSaveOptions{.replace = true});
  expect_checkpoint_equals(io, "latest", other);
  // No debris from the exchange.
  for (const auto& e : fs::directory_iterator(dir.path())) {
    EXPECT_EQ(e.path().filename(), "epoch0-global_step4");
  }
}

TEST(CheckpointIO, KeepsTheNewestNAfterEachCommit) {
  TempDir dir;
  CheckpointOptions o = quiet_options();
  o.keep_n_latest = 2;
  o.async = true;
  CheckpointIO io(dir.path(), o);
  for (int64_t step = 1; step <= 5; ++step) io.save(make_training_state(step * 10));
  io.wait();
  const auto entries = io.list();
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].global_step, 40);
  EXPECT_EQ(entries[1].global_step, 50);
  EXPECT_EQ(entries[1].state, CheckpointState::Committed);
  EXPECT_GT(entries[1].size_bytes, 0u);
  EXPECT_EQ(io.prune(1).size(), 1u);
  EXPECT_EQ(io.list().size(), 1u);
  // prune never removes the newest committed checkpoint.
  EXPECT_TRUE(io.prune(0).empty());
  EXPECT_EQ(io.latest()->global_step, 50);
}

TEST(CheckpointIO, LatestSkipsDamagedCheckpointsAndNamesTheFile) {
  TempDir dir;
  std::vector<std::string> warnings;
  CheckpointOptions o = quiet_options();
  o.warn = [&](const std::string& w) { warnings.push_back(w); };
  CheckpointIO io(dir.path(), o);
  const TrainingState s1 = make_training_state(1);
  io.save(s1);
  const fs::path p2 = io.save(make_training_state(2));

  // A flipped bit keeps the size: only checksums see it.
  const fs::path victim = p2 / "model/model.safetensors";
  std::string bytes = testing::read_file(victim);
  bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0x10);
  testing::write_file(victim, bytes);
  EXPECT_EQ(io.latest(VerifyDepth::Sizes)->global_step, 2);
  EXPECT_TRUE(warnings.empty());
  EXPECT_EQ(io.latest(VerifyDepth::Full)->global_step, 1);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("model/model.safetensors: checksum mismatch"), std::string::npos)
      << warnings[0];
  const VerifyReport v = io.verify(p2, VerifyDepth::Full);
  EXPECT_FALSE(v.ok);
  ASSERT_EQ(v.problems.size(), 1u);
  EXPECT_NE(v.problems[0].find("model/model.safetensors"), std::string::npos);
  EXPECT_TRUE(io.verify(p2, VerifyDepth::Sizes).ok);  // sizes still agree
  EXPECT_EQ(code_of([&] {
              TensorMap m;
              (void)io.load(p2.string(), LoadTargets{.model = &m}, CheckpointLoadOptions{.verify_checksums = true});
            }),
            ErrorCode::Corrupt);

  // A truncated file is caught by sizes alone, so plain latest falls back too.
  warnings.clear();
  fs::resize_file(p2 / "sampler.json", 3);
  EXPECT_EQ(io.latest()->global_step, 1);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("sampler.json: size 3 bytes"), std::string::npos) << warnings[0];
  expect_checkpoint_equals(io, "latest", s1);
  const auto entries = io.list();
  EXPECT_EQ(entries.back().state, CheckpointState::Damaged);
}

TEST(CheckpointIO, FoldersWithoutManifestAreNotCheckpointsAndTempDebrisGoes) {
  TempDir dir;
  CheckpointIO io(dir.path(), quiet_options());
  io.save(make_training_state(1));
  // What a crash leaves: a temp folder, and a final-name folder some tool made by hand.
  fs::create_directories(dir / ".epoch0-global_step2.tmp-abc123/model");
  testing::write_file(dir / ".epoch0-global_step2.tmp-abc123/model/model.safetensors", "xx");
  fs::create_directories(dir / "epoch9-global_step99");
  // Commit order: folders without a recorded commit first (by step), then ours, temp folders last.
  auto entries = io.list();
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(entries[0].name, "epoch9-global_step99");
  EXPECT_EQ(entries[0].state, CheckpointState::Incomplete);
  EXPECT_EQ(entries[1].name, "epoch0-global_step1");
  EXPECT_EQ(entries[1].state, CheckpointState::Committed);
  EXPECT_EQ(entries[2].name, ".epoch0-global_step2.tmp-abc123");
  EXPECT_TRUE(entries[2].is_temp);
  EXPECT_EQ(entries[2].state, CheckpointState::Incomplete);
  EXPECT_EQ(io.latest()->global_step, 1);
  EXPECT_EQ(code_of([&] { (void)io.load("epoch9-global_step99", LoadTargets{}); }),
            ErrorCode::NotFound);
  io.save(make_training_state(3));
  EXPECT_FALSE(fs::exists(dir / ".epoch0-global_step2.tmp-abc123"));
  EXPECT_EQ(io.latest()->global_step, 3);
}

TEST(CheckpointIO, StrictLoadListsEveryMismatchAndWritesNothing) {
  TempDir dir;
  CheckpointIO io(dir.path(), quiet_options());
  const TrainingState s = make_training_state(2);
  io.save(s);
  TensorMap target;
  target["embed.weight"] = Tensor::zeros(DType::F32, {64, 256});
  target["blocks.0.attn.qkv.weight"] = Tensor::zeros(DType::BF16, {128, 96});  // transposed
  target["not.in.checkpoint"] = Tensor::zeros(DType::F32, {1});
  try {
    (void)io.load("latest", LoadTargets{.model = &target});
    FAIL() << "strict load accepted a mismatched target";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Mismatch);
    const std::string m = e.message();
    EXPECT_NE(m.find("missing (1): model:not.in.checkpoint"), std::string::npos) << m;
    EXPECT_NE(m.find("model:blocks.0.attn.qkv.bias"), std::string::npos) << m;
    EXPECT_NE(m.find("model:blocks.0.attn.qkv.weight shape [96, 128]"), std::string::npos) << m;
  }
  // Nothing was written into the target.
  for (auto b : target["embed.weight"].bytes()) ASSERT_EQ(b, std::byte{0});

  const LoadResult r = io.load("latest", LoadTargets{.model = &target}, CheckpointLoadOptions{.strict = false});
  EXPECT_EQ(r.missing, std::vector<std::string>{"model:not.in.checkpoint"});
  EXPECT_EQ(r.unexpected.size(), 3u);
  EXPECT_EQ(r.mismatched.size(), 1u);
  const Tensor& want = s.model->at("embed.weight");
  EXPECT_EQ(0, std::memcmp(target["embed.weight"].bytes().data(), want.bytes().data(),
                           want.nbytes()));
}

TEST(CheckpointIO, InPlaceLoadConvertsDtypes) {
  TempDir dir;
  CheckpointIO io(dir.path(), quiet_options());
  TrainingState s;
  s.model.emplace();
  Tensor w = Tensor::zeros(DType::F32, {4});
  float values[4] = {1.0f, -2.5f, 3.25f, 0.0f};
  std::memcpy(w.mutable_bytes().data(), values, sizeof values);
  (*s.model)["w"] = w;
  io.save(s);
  std::vector<uint16_t> dst(4, 0xffff);
  TensorMap target;
  target["w"] = Tensor::borrow(DType::BF16, {4}, std::as_writable_bytes(std::span(dst)));
  (void)io.load("latest", LoadTargets{.model = &target});
  for (int i = 0; i < 4; ++i) EXPECT_EQ(bf16_to_f32(dst[i]), values[i]);
}

TEST(CheckpointIO, MissingComponentsAreReported) {
  TempDir dir;
  CheckpointIO io(dir.path(), quiet_options());
  TrainingState s = make_training_state(3);
  s.ema.reset();
  s.sampler.reset();
  io.save(s);
  TensorMap ema;
  std::string sampler;
  EXPECT_EQ(code_of([&] { (void)io.load("latest", LoadTargets{.ema = &ema}); }), ErrorCode::NotFound);
  const LoadResult r = io.load("latest", LoadTargets{.ema = &ema, .sampler = &sampler},
                               CheckpointLoadOptions{.strict = false});
  EXPECT_EQ(r.missing_components, (std::vector<std::string>{"ema", "sampler"}));
  EXPECT_EQ(r.running.global_step, 3);
}

TEST(CheckpointIO, NonTensorStateIsJsonTextCheckedBeforeAnythingIsWritten) {
  TempDir dir;
  CheckpointIO io(dir.path(), quiet_options());
  for (auto spoil : std::vector<std::function<void(TrainingState&)>>{
           [](TrainingState& s) { s.extra = "{\"unterminated\": "; },
           [](TrainingState& s) { s.lr_scheduler = "last_epoch=3"; },
           [](TrainingState& s) { s.sampler = ""; },
           [](TrainingState& s) { s.optimizer->meta = "{'single': 'quotes'}"; }}) {
    TrainingState s = make_training_state(1);
    spoil(s);
    EXPECT_EQ(code_of([&] { io.save(s); }), ErrorCode::InvalidArgument);
  }
  EXPECT_TRUE(io.list().empty());
  // Any JSON value is kept as a value: key order and spacing are the writer's, not ours.
  TrainingState s = make_training_state(2);
  s.extra = R"({"b": [1, 2], "a": {"nested": true}})";
  s.sampler = "[3, 1, 2]";
  io.save(s);
  std::string sampler;
  const LoadResult r = io.load("latest", LoadTargets{.sampler = &sampler});
  EXPECT_EQ(testing::json_of(r.extra), testing::json_of(s.extra));
  EXPECT_EQ(testing::json_of(sampler), testing::json_of("[3, 1, 2]"));
}

TEST(CheckpointIO, BackgroundErrorsSurfaceFromWaitAndFromTheNextSave) {
  TempDir dir;
  testing::write_file(dir / "not_a_folder", "x");
  CheckpointOptions o = quiet_options();
  o.async = true;
  CheckpointIO io(dir / "not_a_folder" / "exp", o);
  io.save(make_training_state(1));
  EXPECT_THROW(io.wait(), Error);
  io.wait();  // reported once
  io.save(make_training_state(2));
  EXPECT_THROW(io.save(make_training_state(3)), Error);
  EXPECT_NO_THROW(io.wait());  // save 3 never started; save 2's error was reported by save 3
}

TEST(CheckpointIO, LatestOnAnEmptyExperimentIsNotFound) {
  TempDir dir;
  CheckpointIO io(dir / "nothing", quiet_options());
  EXPECT_FALSE(io.latest().has_value());
  EXPECT_TRUE(io.list().empty());
  EXPECT_EQ(code_of([&] { (void)io.load("latest", LoadTargets{}); }), ErrorCode::NotFound);
}

std::vector<std::string> names_of(const std::vector<CheckpointEntry>& entries) {
  std::vector<std::string> out;
  for (const auto& e : entries) out.push_back(e.name);
  return out;
}

void flip_a_bit(const fs::path& file) {
  std::string bytes = testing::read_file(file);
  bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0x10);
  testing::write_file(file, bytes);
}

// With async saves, save(N) first waits for save(N-1), whose last phases are reported while the
// caller is inside save(N): each report must say which save it is about.
TEST(CheckpointIO, OnPhaseNamesTheSaveItReportsOn) {
  TempDir dir;
  std::mutex mu;
  std::condition_variable cv;
  int64_t issued = 0;  // the step the caller last passed to save()
  struct Report {
    SavePhase phase;
    int64_t reported_step;
    int64_t issued_then;
    std::string path;
  };
  std::vector<Report> reports;
  CheckpointOptions o = quiet_options();
  o.async = true;
  o.on_phase = [&](SavePhase p, const SaveInfo& save) {
    std::unique_lock lock(mu);
    // Hold the first save until the caller has issued the second one: the reports of its later
    // phases then come while "the save I started last" is step 2.
    if (save.global_step == 1 && p == SavePhase::WriteFiles) {
      cv.wait(lock, [&] { return issued == 2; });
    }
    reports.push_back({p, save.global_step, issued, save.path.filename().string()});
  };
  CheckpointIO io(dir.path(), o);
  {
    std::lock_guard lock(mu);
    issued = 1;
  }
  io.save(make_training_state(1));
  {
    std::lock_guard lock(mu);
    issued = 2;
  }
  cv.notify_all();
  io.save(make_training_state(2));
  io.wait();
  int late_reports_of_step1 = 0;
  for (const Report& r : reports) {
    EXPECT_EQ(r.path, "epoch0-global_step" + std::to_string(r.reported_step));
    if (r.reported_step == 1 && r.issued_then == 2) ++late_reports_of_step1;
  }
  // WriteFiles (released by the second save), WriteManifest, Commit, Prune and Done of step 1.
  EXPECT_EQ(late_reports_of_step1, 5);
  ASSERT_EQ(reports.size(), 12u);  // snapshot + 5 phases, twice
}

// Train to 12, delete 8, resume from 4 and save 8 with keep_n_latest = 1: the new 8 is the newest
// checkpoint (commit order, not step order) and the abandoned 12 is what goes.
TEST(CheckpointIO, RetentionAndLatestFollowCommitOrderAfterResumingFromAnOlderStep) {
  TempDir dir;
  {
    CheckpointIO first(dir.path(), quiet_options());
    for (int64_t step : {4, 8, 12}) first.save(make_training_state(step));
  }
  fs::remove_all(dir / "epoch0-global_step8");
  CheckpointOptions o = quiet_options();
  o.keep_n_latest = 1;
  CheckpointIO io(dir.path(), o);
  TensorMap model;
  (void)io.load("epoch0-global_step4", LoadTargets{.model = &model});
  const fs::path saved = io.save(make_training_state(8));
  EXPECT_TRUE(fs::exists(saved / "ckptio.manifest.json"));
  EXPECT_EQ(names_of(io.list()), std::vector<std::string>{"epoch0-global_step8"});
  ASSERT_TRUE(io.latest().has_value());
  EXPECT_EQ(io.latest()->global_step, 8);
  expect_checkpoint_equals(io, "latest", make_training_state(8));
}

// Manifests written before the commit sequence existed load and order by step; a new save comes
// after all of them.
TEST(CheckpointIO, ManifestsWithoutASequenceOrderByStep) {
  TempDir dir;
  {
    CheckpointIO first(dir.path(), quiet_options());
    for (int64_t step : {1, 2, 3}) first.save(make_training_state(step));
  }
  for (int64_t step : {3, 1, 2}) {
    const fs::path manifest = dir / ("epoch0-global_step" + std::to_string(step)) /
                              "ckptio.manifest.json";
    auto doc = nlohmann::json::parse(testing::read_file(manifest));
    ASSERT_TRUE(doc.contains("sequence"));
    doc.erase("sequence");
    testing::write_file(manifest, doc.dump(2));
  }
  CheckpointIO io(dir.path(), quiet_options());
  EXPECT_EQ(names_of(io.list()), (std::vector<std::string>{"epoch0-global_step1",
                                                           "epoch0-global_step2",
                                                           "epoch0-global_step3"}));
  EXPECT_EQ(io.latest()->global_step, 3);
  expect_checkpoint_equals(io, "latest", make_training_state(3));
  fs::remove_all(dir / "epoch0-global_step2");
  io.save(make_training_state(2));
  EXPECT_EQ(io.latest()->global_step, 2);
  EXPECT_EQ(io.list().back().sequence, 1u);
}

// outputs -> real/: listing, pruning, latest and resume follow the link.
TEST(CheckpointIO, SymlinkedExperimentFolderIsFollowed) {
  TempDir dir;
  fs::create_directories(dir / "real");
  fs::create_directory_symlink(dir / "real", dir / "outputs");
  std::vector<std::string> warnings;
  CheckpointOptions o = quiet_options();
  o.keep_n_latest = 1;
  o.warn = [&](const std::string& w) { warnings.push_back(w); };
  CheckpointIO io(dir / "outputs", o);
  for (int64_t step : {1, 2, 3}) io.save(make_training_state(step));
  EXPECT_TRUE(warnings.empty()) << warnings.front();
  EXPECT_EQ(names_of(list_checkpoints(dir / "outputs")),
            std::vector<std::string>{"epoch0-global_step3"});
  EXPECT_FALSE(fs::exists(dir / "real" / "epoch0-global_step1"));
  ASSERT_TRUE(latest_checkpoint(dir / "outputs").has_value());
  EXPECT_EQ(latest_checkpoint(dir / "outputs")->global_step, 3);
  CheckpointIO resumed(dir / "outputs", quiet_options());
  expect_checkpoint_equals(resumed, "latest", make_training_state(3));
}

// An Env that renames a checkpoint folder away (as a concurrent prune does) right when the lister
// looks for its manifest.
class VanishingEnv : public io::Env {
 public:
  explicit VanishingEnv(fs::path victim) : victim_(std::move(victim)) {}
  std::unique_ptr<io::ReadableFile> open_read(const fs::path& p) override {
    return base().open_read(p);
  }
  std::unique_ptr<io::WritableFile> open_write(const fs::path& p, io::OpenMode m) override {
    return base().open_write(p, m);
  }
  std::shared_ptr<const io::MappedFile> map_read(const fs::path& p) override {
    return base().map_read(p);
  }
  void rename(const fs::path& a, const fs::path& b) override { base().rename(a, b); }
  void sync_dir(const fs::path& d) override { base().sync_dir(d); }
  void remove(const fs::path& p) override { base().remove(p); }
  void remove_all(const fs::path& p) override { base().remove_all(p); }
  void create_dirs(const fs::path& p) override { base().create_dirs(p); }
  std::vector<std::string> list_dir(const fs::path& d) override { return base().list_dir(d); }
  io::FileInfo stat(const fs::path& p) override {
    if (!vanished_ && p == victim_ / "ckptio.manifest.json") {
      vanished_ = true;
      base().rename(victim_, victim_.parent_path() / ".epoch0-global_step1.tmp-pruned");
    }
    return base().stat(p);
  }

 private:
  static io::Env& base() { return io::Env::posix(); }
  fs::path victim_;
  bool vanished_ = false;
};

TEST(CheckpointIO, ListingDuringAPruneDoesNotReportTheVictimAsDamaged) {
  TempDir dir;
  {
    CheckpointIO io(dir.path(), quiet_options());
    io.save(make_training_state(1));
    io.save(make_training_state(2));
  }
  VanishingEnv env(dir / "epoch0-global_step1");
  const auto entries = list_checkpoints(dir.path(), {.env = &env});
  for (const auto& e : entries) {
    EXPECT_NE(e.name, "epoch0-global_step1") << checkpoint_state_name(e.state) << ": " << e.problem;
  }
  EXPECT_EQ(entries.back().name, "epoch0-global_step2");
  EXPECT_EQ(entries.back().state, CheckpointState::Committed);
}

// list/latest/verify from another thread while a background save runs.
TEST(CheckpointIO, ListLatestVerifyWhileABackgroundSavePrunes) {
  TempDir dir;
  CheckpointOptions o = quiet_options();
  o.async = true;
  o.keep_n_latest = 1;
  CheckpointIO io(dir.path(), o);
  io.save(make_training_state(1));
  io.wait();
  for (int64_t step = 2; step <= 6; ++step) {
    io.save(make_training_state(step));
    for (const auto& e : io.list()) {
      if (!e.is_temp) {
        EXPECT_EQ(e.state, CheckpointState::Committed) << e.name << ": " << e.problem;
      }
    }
    const auto latest = io.latest();
    ASSERT_TRUE(latest.has_value());
    EXPECT_TRUE(latest->global_step == step || latest->global_step == step - 1);
  }
  io.wait();
  EXPECT_EQ(names_of(io.list()), std::vector<std::string>{"epoch0-global_step6"});
}

TEST(CheckpointIO, OnPhaseThrowingAfterTheCommitIsOnlyAWarning) {
  for (bool async : {false, true}) {
    SCOPED_TRACE(async ? "async" : "sync");
    TempDir dir;
    std::vector<std::string> warnings;
    CheckpointOptions o = quiet_options();
    o.async = async;
    o.warn = [&](const std::string& w) { warnings.push_back(w); };
    o.on_phase = [](SavePhase p) {
      if (p == SavePhase::Prune || p == SavePhase::Done) throw std::runtime_error("hook failed");
    };
    CheckpointIO io(dir.path(), o);
    io.save(make_training_state(1));
    io.wait();
    EXPECT_EQ(warnings.size(), 2u);
    EXPECT_NE(warnings.at(0).find("hook failed"), std::string::npos);
    expect_checkpoint_equals(io, "latest", make_training_state(1));
  }
}

TEST(CheckpointIO, FailingToStartAThreadIsAnErrorAndTheObjectStaysUsable) {
  TempDir dir;
  CheckpointOptions o = quiet_options();
  o.async = true;
  o.threads = 4;
  CheckpointIO io(dir.path(), o);
  set_thread_factory_for_testing([](std::function<void()>) -> std::thread {
    throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again),
                            "thread");
  });
  const TrainingState big = make_training_state(1, 80);  // several copy chunks
  EXPECT_EQ(code_of([&] { io.save(big); }), ErrorCode::IoError);
  EXPECT_FALSE(io.busy());
  EXPECT_NO_THROW(io.wait());
  EXPECT_TRUE(io.list().empty());
  // A sync save needs no thread of its own; its checksum helper falls back to the caller's.
  CheckpointOptions sync_options = quiet_options();
  CheckpointIO sync_io(dir.path(), sync_options);
  sync_io.save(make_training_state(2));
  set_thread_factory_for_testing({});
  EXPECT_TRUE(sync_io.verify("epoch0-global_step2", VerifyDepth::Full).ok);
  io.save(big);
  io.wait();
  expect_checkpoint_equals(io, "epoch0-global_step1", big);
}

// A checkpoint that does not verify is not a checkpoint: saving its step moves it aside (the run
// that resumed from step 8 because step 9 was truncated can save step 9).
TEST(CheckpointIO, SavingOverADamagedCheckpointMovesItAside) {
  TempDir dir;
  std::vector<std::string> warnings;
  CheckpointOptions o = quiet_options();
  o.warn = [&](const std::string& w) { warnings.push_back(w); };
  o.keep_n_latest = 2;
  CheckpointIO io(dir.path(), o);
  for (int64_t step : {7, 8, 9}) io.save(make_training_state(step));
  fs::resize_file(dir / "epoch0-global_step9/sampler.json", 3);
  warnings.clear();
  CheckpointIO resumed(dir.path(), o);
  expect_checkpoint_equals(resumed, "latest", make_training_state(8));
  const TrainingState s9 = make_training_state(9);
  ASSERT_NO_THROW(resumed.save(s9));
  EXPECT_TRUE(fs::is_directory(dir / "epoch0-global_step9.damaged-1"));
  bool warned = false;
  for (const auto& w : warnings) warned |= w.find("epoch0-global_step9.damaged-1") != std::string::npos;
  EXPECT_TRUE(warned);
  EXPECT_EQ(names_of(resumed.list()),
            (std::vector<std::string>{"epoch0-global_step8", "epoch0-global_step9"}));
  EXPECT_TRUE(resumed.verify("epoch0-global_step9", VerifyDepth::Full).ok);
  expect_checkpoint_equals(resumed, "latest", s9);
  // Pruning leaves the damaged folder for a person.
  resumed.prune(1);
  EXPECT_TRUE(fs::is_directory(dir / "epoch0-global_step9.damaged-1"));
  // A committed checkpoint that verifies still needs replace.
  EXPECT_EQ(code_of([&] { resumed.save(s9); }), ErrorCode::AlreadyExists);
}

// A flipped bit keeps every size: the load's checksums catch it, "latest" falls back, and pruning
// never removes the checkpoint the run resumed from before the run committed a newer one.
TEST(CheckpointIO, LoadChecksChecksumsFallsBackAndPruningSparesTheResumedCheckpoint) {
  TempDir dir;
  {
    CheckpointIO first(dir.path(), quiet_options());
    for (int64_t step : {1, 2, 3}) first.save(make_training_state(step));
  }
  flip_a_bit(dir / "epoch0-global_step3/model/model.safetensors");
  std::vector<std::string> warnings;
  CheckpointOptions o = quiet_options();
  o.keep_n_latest = 1;
  o.warn = [&](const std::string& w) { warnings.push_back(w); };
  CheckpointIO io(dir.path(), o);
  // A path load without asking for checksums still checks them.
  EXPECT_EQ(code_of([&] {
              TensorMap m;
              (void)io.load("epoch0-global_step3", LoadTargets{.model = &m});
            }),
            ErrorCode::Corrupt);
  expect_checkpoint_equals(io, "latest", make_training_state(2));
  ASSERT_FALSE(warnings.empty());
  EXPECT_NE(warnings.back().find("epoch0-global_step3"), std::string::npos) << warnings.back();
  EXPECT_NE(warnings.back().find("model/model.safetensors: checksum mismatch"), std::string::npos)
      << warnings.back();
  // Before this run commits anything, the checkpoint it resumed from (and older ones) stay.
  EXPECT_TRUE(io.prune(1).empty());
  EXPECT_TRUE(fs::exists(dir / "epoch0-global_step2"));
  EXPECT_TRUE(fs::exists(dir / "epoch0-global_step1"));
  // Saving step 3 moves the flipped one aside; then retention applies as usual.
  io.save(make_training_state(3));
  EXPECT_TRUE(fs::is_directory(dir / "epoch0-global_step3.damaged-1"));
  EXPECT_EQ(names_of(io.list()), std::vector<std::string>{"epoch0-global_step3"});
  expect_checkpoint_equals(io, "latest", make_training_state(3));
}

// One index renderer: the sharded index CheckpointIO writes is byte for byte the one save_sharded
// writes for the same tensors, and what transformers' save_pretrained writes for it
// (json.dumps(index, indent=2, sort_keys=True) + "\n", ensure_ascii being Python's default), also
// for names outside ASCII and outside the Basic Multilingual Plane.
TEST(CheckpointIndex, BytesMatchSaveShardedAndTransformers) {
  TempDir dir;
  TrainingState state;
  state.model.emplace();
  // Names in UTF-8: "w" + e-acute, a CJK character, an emoji (a surrogate pair in JSON), DEL.
  for (const std::string name : {"w\xc3\xa9ight", "\xe6\xa8\xa1.bias", "z.\xf0\x9f\x98\x80",
                                 "a.plain", "del\x7f"}) {
    state.model->emplace(name, testing::patterned_tensor(DType::F32, {100}, name.size()));
  }
  CheckpointOptions o = quiet_options();
  o.max_shard_size = 900;  // two tensors of 400 bytes per shard
  CheckpointIO io(dir.path(), o);
  const fs::path ckpt = io.save(state);
  const std::string from_checkpoint =
      testing::read_file(ckpt / "model" / "model.safetensors.index.json");
  EXPECT_NE(from_checkpoint.find("\\u00e9"), std::string::npos) << from_checkpoint;
  EXPECT_NE(from_checkpoint.find("\\ud83d\\ude00"), std::string::npos) << from_checkpoint;

  std::vector<NamedTensor> named;
  for (const auto& [name, t] : *state.model) named.push_back({name, t.view()});
  ShardedWriteOptions so;
  so.max_shard_size = 900;
  so.sync = false;
  save_sharded(dir / "sharded", named, so);
  EXPECT_EQ(testing::read_file(dir / "sharded" / "model.safetensors.index.json"), from_checkpoint);
  EXPECT_EQ(render_shard_index(plan_shards(named, 900), named), from_checkpoint);

  // What transformers writes for this index.
  const fs::path py_out = dir / "transformers.json";
  ASSERT_EQ(testing::run_python(dir.path(),
                                "import json, sys\n"
                                "src, dst = sys.argv[1], sys.argv[2]\n"
                                "index = json.load(open(src, encoding='utf-8'))\n"
                                "with open(dst, 'w', encoding='utf-8') as f:\n"
                                "    f.write(json.dumps(index, indent=2, sort_keys=True) + '\\n')\n",
                                (ckpt / "model" / "model.safetensors.index.json").string() + " " +
                                    py_out.string()),
            0);
  EXPECT_EQ(testing::read_file(py_out), from_checkpoint);
}

TEST(CheckpointNames, ParseSizesAndFolderNames) {
  EXPECT_EQ(parse_size("4GB"), 4'000'000'000u);
  EXPECT_EQ(parse_size("2GiB"), 2ull << 30);
  EXPECT_EQ(parse_size("500MB"), 500'000'000u);
  EXPECT_EQ(parse_size("1.5GB"), 1'500'000'000u);
  EXPECT_EQ(parse_size("123"), 123u);
  EXPECT_THROW(parse_size("4 parsecs"), Error);
  EXPECT_THROW(parse_size(""), Error);
  EXPECT_EQ(checkpoint_folder_name(2, 300), "epoch2-global_step300");
  EXPECT_EQ(parse_checkpoint_folder_name("epoch2-global_step300"), std::make_pair(int64_t{2}, int64_t{300}));
  EXPECT_FALSE(parse_checkpoint_folder_name("epoch2-global_step"));
  EXPECT_FALSE(parse_checkpoint_folder_name("epochx-global_step3"));
  EXPECT_FALSE(parse_checkpoint_folder_name(".epoch2-global_step3.tmp-abc"));
}

}  // namespace
}  // namespace ckptio
