// dist::CheckpointIO: the training state saved on N ranks and resumed on M, per-rank values,
// pruning, latest with fallback, async copy and borrow, and a failing rank.
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <future>
#include <latch>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "ckptio/dist_checkpoint_io.h"
#include "ckptio/error.h"
#include "ckptio/fault_env.h"
#include "dist/checkpoint_io_plain.h"
#include "dist_helpers.h"
#include "support/test_util.h"

namespace ckptio::dist {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::error_message;
using testing::global_bytes;
using testing::Layout;
using testing::local_bytes;
using testing::pieces_for;
using testing::run_ranks;
using testing::Spec;
using testing::specs;
namespace fs = std::filesystem;

// The tensors of each component: the shared specs for model and EMA, a ZeRO-like optimizer.
const std::vector<std::pair<std::string, std::vector<Spec>>>& component_specs() {
  static const std::vector<std::pair<std::string, std::vector<Spec>>> c{
      {"model", specs()},
      {"ema", {{"rows", DType::BF16, {10, 6}, Layout::Rows}, {"rep", DType::F32, {3, 5}, Layout::Replicated}}},
      {"optimizer",
       {{"state.0.exp_avg", DType::F32, {10, 6}, Layout::Flat},
        {"state.0.exp_avg_sq", DType::F32, {10, 6}, Layout::Flat},
        {"state.0.step", DType::F32, {}, Layout::Replicated}}},
  };
  return c;
}

// The bytes of a component's tensor at a step (each step's checkpoint holds different bytes).
std::vector<std::byte> full(const std::string& component, const Spec& s, int64_t step) {
  return global_bytes(component + "." + s.name + "@" + std::to_string(step), s.dtype, s.shape);
}

// One rank's training state and the buffers it points into.
struct RankState {
  std::vector<std::vector<std::byte>> buffers;
  TrainingState state;
};

std::unique_ptr<RankState> make_state(int rank, int world, int64_t step) {
  auto rs = std::make_unique<RankState>();
  std::vector<std::pair<ComponentState*, size_t>> owners;
  std::vector<SaveItem> items;
  for (const auto& [component, list] : component_specs()) {
    ComponentState cs;
    for (const Spec& s : list) {
      const auto global = full(component, s, step);
      for (ShardedTensor& t : pieces_for(s.name, s.dtype, s.shape, s.saved, rank, world)) {
        rs->buffers.push_back(local_bytes(t, global));
        cs.tensors.push_back({std::move(t), {}});
      }
    }
    if (component == "model") rs->state.model = std::move(cs);
    if (component == "ema") rs->state.ema = std::move(cs);
    if (component == "optimizer") {
      cs.values = R"({"param_groups": [{"lr": 0.1, "betas": [0.9, 0.999], "params": [0]}]})";
      rs->state.optimizer = std::move(cs);
    }
  }
  size_t i = 0;
  for (auto* cs : {&*rs->state.model, &*rs->state.ema, &*rs->state.optimizer}) {
    for (SaveItem& item : cs->tensors) item.bytes = rs->buffers[i++];
  }
  rs->state.lr_scheduler = ComponentState{
      {}, R"({"last_epoch": )" + std::to_string(step) + R"(, "base_lrs": [0.1], "inner": {"a": 1}})"};
  // The sampler's position differs per rank.
  rs->state.sampler = ComponentState{
      {}, R"({"epoch": 1, "index": )" + std::to_string(100 + rank) + R"(, "seed": 42})"};
  rs->state.running = {.epoch = 1, .step = step % 7, .global_step = step, .batch_size = 8,
                       .actual_update_step = step};
  rs->state.extra = R"({"note": "hello"})";
  return rs;
}

CheckpointIOOptions fast(CheckpointIOOptions o = {}) {
  o.sync = false;
  o.warn = [](const std::string&) {};
  return o;
}

CheckpointIOOptions fast_async(SnapshotMode snapshot) {
  CheckpointIOOptions o = fast();
  o.async = true;
  o.snapshot = snapshot;
  return o;
}

void save_steps(int world, const fs::path& exp, std::initializer_list<int64_t> steps,
                const CheckpointIOOptions& options = fast()) {
  const auto errors = run_ranks(world, 120s, [&](int rank, Communicator& comm) {
    CheckpointIO io(comm, exp, options);
    for (int64_t step : steps) {
      auto rs = make_state(rank, world, step);
      (void)io.save(rs->state);
      io.wait();
    }
  });
  for (int r = 0; r < world; ++r) ASSERT_EQ(error_message(errors[size_t(r)]), "") << "rank " << r;
}

// A rank's load targets in layout `l` of `world` (model in l, the rest as saved), the expected
// bytes of each, and their buffers.
struct RankTargets {
  std::vector<std::vector<std::byte>> buffers;
  std::vector<std::vector<std::byte>> expected;
  std::vector<std::string> names;
  TrainingLoadTargets targets;
};

std::unique_ptr<RankTargets> make_targets(int rank, int world, Layout l, int64_t step) {
  auto rt = std::make_unique<RankTargets>();
  std::vector<ComponentTarget> comps;
  for (const auto& [component, list] : component_specs()) {
    ComponentTarget ct;
    for (const Spec& s : list) {
      const auto global = full(component, s, step);
      const Layout layout = component == "model" ? l : s.saved;
      for (ShardedTensor& t : pieces_for(s.name, s.dtype, s.shape, layout, rank, world)) {
        rt->expected.push_back(local_bytes(t, global));
        rt->buffers.emplace_back(t.local_nbytes(), std::byte{0x5a});
        rt->names.push_back(component + "." + t.name);
        ct.tensors.push_back({std::move(t), {}});
      }
    }
    comps.push_back(std::move(ct));
  }
  size_t i = 0;
  for (auto& ct : comps) {
    for (LoadItem& item : ct.tensors) item.bytes = rt->buffers[i++];
  }
  rt->targets.model = std::move(comps[0]);
  rt->targets.ema = std::move(comps[1]);
  rt->targets.optimizer = std::move(comps[2]);
  rt->targets.lr_scheduler = ComponentTarget{};
  rt->targets.sampler = ComponentTarget{};
  return rt;
}

std::string mismatched(const RankTargets& rt) {
  std::string out;
  for (size_t i = 0; i < rt.buffers.size(); ++i) {
    if (rt.buffers[i] != rt.expected[i]) out += rt.names[i] + " ";
  }
  return out;
}

class DistCheckpointIORoundTrip : public ::testing::TestWithParam<std::pair<int, int>> {};

TEST_P(DistCheckpointIORoundTrip, EveryComponentComesBackBitExactOnAnotherWorldSize) {
  // Plain variables, not a structured binding: clang 14 cannot capture bindings in lambdas.
  const int saved = GetParam().first, loaded = GetParam().second;
  ckptio::testing::TempDir tmp;
  const fs::path exp = tmp / "exp";
  save_steps(saved, exp, {5});
  for (Layout l : {Layout::Rows, Layout::Flat, Layout::Replicated}) {
    std::mutex mu;
    const auto errors = run_ranks(loaded, 120s, [&](int rank, Communicator& comm) {
      CheckpointIO io(comm, exp, fast());
      auto rt = make_targets(rank, loaded, l, 5);
      TrainingLoadOptions lo;
      lo.per_rank = PerRankRule::Rank0;
      const TrainingLoadResult r = io.load("latest", rt->targets, lo);
      std::lock_guard lock(mu);
      EXPECT_EQ(mismatched(*rt), "") << "rank " << rank << " layout " << testing::layout_name(l);
      EXPECT_EQ(r.path, exp / "epoch1-global_step5");
      EXPECT_EQ(r.saved_world_size, saved);
      EXPECT_EQ(r.running.epoch, 1);
      EXPECT_EQ(r.running.step, 5);
      EXPECT_EQ(r.running.global_step, 5);
      EXPECT_EQ(r.running.batch_size, 8);
      EXPECT_EQ(r.running.actual_update_step, 5);
      EXPECT_EQ(json::parse(r.extra), json::parse(R"({"note": "hello"})"));
      EXPECT_EQ(json::parse(r.values.at("lr_scheduler")),
                json::parse(R"({"last_epoch": 5, "base_lrs": [0.1], "inner": {"a": 1}})"));
      EXPECT_EQ(json::parse(r.values.at("optimizer")),
                json::parse(R"({"param_groups": [{"lr": 0.1, "betas": [0.9, 0.999], "params": [0]}]})"));
      EXPECT_EQ(json::parse(r.values.at("model")), json::object());
      // Same world size: each rank its own sampler position; else rank 0's, as asked.
      const int index = saved == loaded ? 100 + rank : 100;
      EXPECT_EQ(json::parse(r.values.at("sampler")),
                json({{"epoch", 1}, {"index", index}, {"seed", 42}}));
      if (saved > 1) {
        ASSERT_EQ(r.per_rank.count("sampler.index"), 1u);
        EXPECT_EQ(r.per_rank.at("sampler.index").size(), size_t(saved));
      }
    });
    for (int r = 0; r < loaded; ++r) ASSERT_EQ(error_message(errors[size_t(r)]), "") << "rank " << r;
  }
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, DistCheckpointIORoundTrip,
                         ::testing::Values(std::pair{4, 2}, std::pair{2, 3}, std::pair{1, 4},
                                           std::pair{3, 3}, std::pair{2, 2}),
                         [](const auto& info) {
                           return "saved" + std::to_string(info.param.first) + "_loaded" +
                                  std::to_string(info.param.second);
                         });

TEST(DistCheckpointIO, ThePlainDataDocumentIsTheOnePythonWrites) {
  ckptio::testing::TempDir tmp;
  const fs::path exp = tmp / "exp";
  save_steps(2, exp, {3});
  const Reader reader = Reader::open(exp / "epoch1-global_step3");
  EXPECT_NE(reader.find("model.rows"), nullptr);
  EXPECT_NE(reader.find("optimizer.state.0.exp_avg"), nullptr);
  EXPECT_NE(reader.find("ema.rep"), nullptr);
  const IndexTensor* t = reader.find(kPlainDataName);
  ASSERT_NE(t, nullptr);
  ASSERT_EQ(t->dtype, DType::U8);
  std::string text(size_t(t->shape.at(0)), '\0');
  (void)reader.read_tensor(kPlainDataName, std::as_writable_bytes(std::span(text)));
  const json doc = json::parse(text);
  EXPECT_EQ(doc["format"], "ckptio.plain_data");
  EXPECT_EQ(doc["version"], 1);
  EXPECT_EQ(doc["world_size"], 2);
  const json& v = doc["values"];
  EXPECT_EQ(v["running_states.global_step"], 3);
  EXPECT_EQ(v["running_states.extra"], json::parse(R"([{"note": "hello"}])"));
  EXPECT_EQ(v["lr_scheduler.last_epoch"], 3);
  EXPECT_EQ(v["lr_scheduler.inner.a"], 1);
  EXPECT_EQ(v["optimizer.param_groups"][0]["lr"], 0.1);
  EXPECT_EQ(v["sampler.seed"], 42);
  EXPECT_FALSE(v.contains("sampler.index"));
  EXPECT_EQ(doc["per_rank"]["sampler.index"], json::parse("[100, 101]"));
}

TEST(DistCheckpointIO, PerRankValuesOnAnotherWorldSizeAreAMismatchUnlessAskedOtherwise) {
  ckptio::testing::TempDir tmp;
  const fs::path exp = tmp / "exp";
  save_steps(2, exp, {4});
  // The default: every rank throws Mismatch naming the key.
  auto errors = run_ranks(3, 120s, [&](int, Communicator& comm) {
    CheckpointIO io(comm, exp, fast());
    TrainingLoadTargets targets;
    targets.sampler = ComponentTarget{};
    (void)io.load("latest", targets);
  });
  for (int r = 0; r < 3; ++r) {
    ASSERT_TRUE(errors[size_t(r)]) << "rank " << r;
    try {
      std::rethrow_exception(errors[size_t(r)]);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::Mismatch) << e.what();
      EXPECT_NE(e.message().find("'sampler.index'"), std::string::npos) << e.what();
    }
  }
  // Omit: the key is left out, every saved value is in per_rank.
  std::mutex mu;
  errors = run_ranks(3, 120s, [&](int, Communicator& comm) {
    CheckpointIO io(comm, exp, fast());
    TrainingLoadTargets targets;
    targets.sampler = ComponentTarget{};
    TrainingLoadOptions lo;
    lo.per_rank = PerRankRule::Omit;
    const TrainingLoadResult r = io.load("latest", targets, lo);
    std::lock_guard lock(mu);
    EXPECT_EQ(json::parse(r.values.at("sampler")), json({{"epoch", 1}, {"seed", 42}}));
    EXPECT_EQ(r.per_rank.at("sampler.index"), (std::vector<std::string>{"100", "101"}));
  });
  for (int r = 0; r < 3; ++r) ASSERT_EQ(error_message(errors[size_t(r)]), "") << "rank " << r;
}

TEST(DistCheckpointIO, AnAbsentComponentIsNotFoundWhenStrictAndListedOtherwise) {
  ckptio::testing::TempDir tmp;
  const fs::path exp = tmp / "exp";
  const auto saved = run_ranks(2, 120s, [&](int rank, Communicator& comm) {
    CheckpointIO io(comm, exp, fast());
    auto rs = make_state(rank, 2, 1);
    rs->state.ema.reset();
    rs->state.lr_scheduler = ComponentState{};  // empty: still there
    (void)io.save(rs->state);
  });
  for (int r = 0; r < 2; ++r) ASSERT_EQ(error_message(saved[size_t(r)]), "");
  std::mutex mu;
  const auto errors = run_ranks(2, 120s, [&](int, Communicator& comm) {
    CheckpointIO io(comm, exp, fast());
    TrainingLoadTargets targets;
    targets.ema = ComponentTarget{};
    targets.lr_scheduler = ComponentTarget{};
    try {
      (void)io.load("latest", targets);
      ADD_FAILURE() << "a strict load of an absent ema succeeded";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::NotFound) << e.what();
      EXPECT_NE(e.message().find("has no ema"), std::string::npos) << e.what();
    }
    TrainingLoadOptions lo;
    lo.strict = false;
    const TrainingLoadResult r = io.load("latest", targets, lo);
    std::lock_guard lock(mu);
    EXPECT_EQ(r.missing_components, (std::vector<std::string>{"ema"}));
    EXPECT_EQ(r.values.at("lr_scheduler"), "{}");
  });
  for (int r = 0; r < 2; ++r) ASSERT_EQ(error_message(errors[size_t(r)]), "") << "rank " << r;
}

TEST(DistCheckpointIO, KeepNLatestPrunesAfterEachCommit) {
  ckptio::testing::TempDir tmp;
  const fs::path exp = tmp / "exp";
  CheckpointIOOptions o = fast();
  o.keep_n_latest = 2;
  save_steps(3, exp, {1, 2, 3, 4}, o);
  std::vector<std::string> names;
  for (const auto& e : list_checkpoints(exp)) {
    EXPECT_EQ(e.state, CheckpointState::Committed) << e.name;
    names.push_back(e.name);
  }
  EXPECT_EQ(names, (std::vector<std::string>{"epoch1-global_step3", "epoch1-global_step4"}));
  // Commit order comes from the manifest's sequence number.
  EXPECT_GT(list_checkpoints(exp).back().sequence, list_checkpoints(exp).front().sequence);
}

// Loads "latest" on `world` ranks; returns the global step each rank got.
std::vector<int64_t> load_latest_steps(int world, const fs::path& exp, VerifyDepth depth,
                                       std::vector<std::string>* warnings = nullptr) {
  std::vector<int64_t> steps(size_t(world), -1);
  std::mutex mu;
  const auto errors = run_ranks(world, 120s, [&](int rank, Communicator& comm) {
    CheckpointIO io(comm, exp, fast());
    // The model's bytes are checked against the step the checkpoint claims.
    TrainingLoadOptions lo;
    lo.verify = depth;
    lo.per_rank = PerRankRule::Rank0;  // the sampler's position, when the world size changed
    auto probe = make_targets(rank, world, Layout::Rows, 0);
    const TrainingLoadResult r = io.load("latest", probe->targets, lo);
    auto expected = make_targets(rank, world, Layout::Rows, r.running.global_step);
    std::lock_guard lock(mu);
    EXPECT_EQ(probe->buffers, expected->expected) << "rank " << rank;
    steps[size_t(rank)] = r.running.global_step;
    if (warnings && rank == 0) *warnings = r.warnings;
  });
  for (int r = 0; r < world; ++r) EXPECT_EQ(error_message(errors[size_t(r)]), "") << "rank " << r;
  return steps;
}

fs::path a_rank_file(const fs::path& checkpoint) {
  for (const auto& e : fs::directory_iterator(checkpoint)) {
    if (e.path().extension() == ".safetensors") return e.path();
  }
  return {};
}

TEST(DistCheckpointIO, LatestFallsBackPastATruncatedNewestCheckpoint) {
  ckptio::testing::TempDir tmp;
  const fs::path exp = tmp / "exp";
  save_steps(2, exp, {1, 2});
  const fs::path victim = a_rank_file(exp / "epoch1-global_step2");
  ASSERT_FALSE(victim.empty());
  fs::resize_file(victim, fs::file_size(victim) - 1);
  std::vector<std::string> warnings;
  EXPECT_EQ(load_latest_steps(2, exp, VerifyDepth::Sizes, &warnings), (std::vector<int64_t>{1, 1}));
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("epoch1-global_step2"), std::string::npos) << warnings[0];
}

TEST(DistCheckpointIO, LatestWithFullVerificationFallsBackPastAFlippedByte) {
  ckptio::testing::TempDir tmp;
  const fs::path exp = tmp / "exp";
  save_steps(2, exp, {1, 2});
  const fs::path victim = a_rank_file(exp / "epoch1-global_step2");
  {
    std::fstream f(victim, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(-1, std::ios::end);
    const char c = static_cast<char>(f.get());
    f.seekp(-1, std::ios::end);
    f.put(static_cast<char>(c ^ 0x40));
  }
  std::vector<std::string> warnings;
  EXPECT_EQ(load_latest_steps(3, exp, VerifyDepth::Full, &warnings), (std::vector<int64_t>{1, 1, 1}));
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("checksum"), std::string::npos) << warnings[0];
}

TEST(DistCheckpointIO, AsyncCopyWritesTheBytesOfTheMomentSaveReturned) {
  ckptio::testing::TempDir tmp;
  const fs::path exp = tmp / "exp";
  const CheckpointIOOptions o = fast_async(SnapshotMode::Copy);
  const auto errors = run_ranks(2, 120s, [&](int rank, Communicator& comm) {
    CheckpointIO io(comm, exp, o);
    auto rs = make_state(rank, 2, 7);
    (void)io.save(rs->state);
    // Training goes on: every buffer changes before the files are (necessarily) written.
    for (auto& b : rs->buffers) std::fill(b.begin(), b.end(), std::byte{0xee});
    io.wait();
    EXPECT_FALSE(io.busy());
  });
  for (int r = 0; r < 2; ++r) ASSERT_EQ(error_message(errors[size_t(r)]), "") << "rank " << r;
  EXPECT_EQ(load_latest_steps(2, exp, VerifyDepth::Full), (std::vector<int64_t>{7, 7}));
}

// Wraps a rank's communicator: the first collective made on the thread that built the wrapper
// (the caller's) throws, any other first collective waits until the test opens the gate.
class GatedCommunicator final : public Communicator {
 public:
  GatedCommunicator(Communicator& inner, std::shared_future<void> gate)
      : inner_(inner), gate_(std::move(gate)), owner_(std::this_thread::get_id()) {}
  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  std::chrono::milliseconds timeout() const override { return inner_.timeout(); }
  std::vector<std::string> all_gather(std::string_view mine) override {
    enter();
    return done(inner_.all_gather(mine));
  }
  std::vector<std::string> gather(std::string_view mine, int root) override {
    enter();
    return done(inner_.gather(mine, root));
  }
  std::string broadcast(std::string_view bytes, int root) override {
    enter();
    return done(inner_.broadcast(bytes, root));
  }
  void barrier() override {
    enter();
    inner_.barrier();
    ++completed;
  }
  std::atomic<int> completed{0};  // collectives that returned

 private:
  void enter() {
    if (first_) {
      first_ = false;
      if (std::this_thread::get_id() == owner_) {
        throw Error(ErrorCode::Internal, "the save's first collective ran on the caller's thread");
      }
      gate_.wait();
    }
  }
  template <typename T>
  T done(T value) {
    ++completed;
    return value;
  }
  Communicator& inner_;
  std::shared_future<void> gate_;
  std::thread::id owner_;
  bool first_ = true;
};

TEST(DistCheckpointIO, AsyncCopyReturnsBeforeTheRanksAgree) {
  ckptio::testing::TempDir tmp;
  const fs::path exp = tmp / "exp";
  const CheckpointIOOptions o = fast_async(SnapshotMode::Copy);
  std::promise<void> open;
  const std::shared_future<void> gate = open.get_future().share();
  std::latch returned(2);
  std::vector<int> completed_at_return(2, -1);
  const auto errors = run_ranks(2, 120s, [&](int rank, Communicator& comm) {
    GatedCommunicator gated(comm, gate);
    CheckpointIO io(gated, exp, o);
    // Once both ranks' save() returned (or threw), rank 0 opens the gate; also on the way out of
    // a failing rank, before io's destructor waits for its background save.
    struct Arrive {
      std::latch& returned;
      std::promise<void>& open;
      int rank;
      bool done = false;
      void operator()() {
        if (std::exchange(done, true)) return;
        returned.count_down();
        if (rank == 0) {
          returned.wait();
          open.set_value();
        }
      }
      ~Arrive() { (*this)(); }
    } arrive{returned, open, rank};
    auto rs = make_state(rank, 2, 3);
    (void)io.save(rs->state);
    // No collective has completed on this rank: save() returned before any agreement.
    completed_at_return[size_t(rank)] = gated.completed.load();
    EXPECT_TRUE(io.busy());
    for (auto& b : rs->buffers) std::fill(b.begin(), b.end(), std::byte{0xee});
    arrive();
    io.wait();
    EXPECT_GT(gated.completed.load(), 0);
  });
  for (int r = 0; r < 2; ++r) {
    ASSERT_EQ(error_message(errors[size_t(r)]), "") << "rank " << r;
    EXPECT_EQ(completed_at_return[size_t(r)], 0) << "rank " << r;
  }
  EXPECT_EQ(load_latest_steps(2, exp, VerifyDepth::Full), (std::vector<int64_t>{3, 3}));
}

TEST(DistCheckpointIO, AsyncBorrowWritesTheCallersBuffersUntilWait) {
  ckptio::testing::TempDir tmp;
  const fs::path exp = tmp / "exp";
  CheckpointIOOptions o = fast_async(SnapshotMode::Borrow);
  o.keep_n_latest = 1;
  const auto errors = run_ranks(3, 120s, [&](int rank, Communicator& comm) {
    CheckpointIO io(comm, exp, o);
    auto first = make_state(rank, 3, 8);
    (void)io.save(first->state);
    auto second = make_state(rank, 3, 9);
    (void)io.save(second->state);  // waits for the first save
    io.wait();
    for (auto& b : second->buffers) std::fill(b.begin(), b.end(), std::byte{0xee});
  });
  for (int r = 0; r < 3; ++r) ASSERT_EQ(error_message(errors[size_t(r)]), "") << "rank " << r;
  EXPECT_EQ(load_latest_steps(2, exp, VerifyDepth::Full), (std::vector<int64_t>{9, 9}));
  EXPECT_EQ(list_checkpoints(exp).size(), 1u);
}

void expect_io_error_everywhere(const std::vector<std::exception_ptr>& errors) {
  for (size_t r = 0; r < errors.size(); ++r) {
    ASSERT_TRUE(errors[r]) << "rank " << r << " returned success";
    try {
      std::rethrow_exception(errors[r]);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::IoError) << e.what();
      EXPECT_NE(e.message().find("rank 2 of 4 failed"), std::string::npos) << e.what();
    }
  }
}

TEST(DistCheckpointIO, AnIoErrorOnOneRankFailsEverySaveAndCommitsNothing) {
  for (bool async : {false, true}) {
    SCOPED_TRACE(async ? "async" : "sync");
    ckptio::testing::TempDir tmp;
    const fs::path exp = tmp / "exp";
    io::FaultInjectingEnv faulty;
    faulty.inject(io::Fault{io::FaultOp::Write, 1, EIO, "shard-00003-", true});
    std::vector<char> save_returned(4, 0);
    const auto errors = run_ranks(4, 120s, [&](int rank, Communicator& comm) {
      CheckpointIOOptions o = fast();
      o.async = async;
      if (rank == 2) o.env = &faulty;
      CheckpointIO io(comm, exp, o);
      auto rs = make_state(rank, 4, 1);
      (void)io.save(rs->state);
      save_returned[size_t(rank)] = 1;
      io.wait();
    });
    expect_io_error_everywhere(errors);
    for (int r = 0; r < 4; ++r) EXPECT_EQ(save_returned[size_t(r)] != 0, async) << "rank " << r;
    EXPECT_TRUE(list_checkpoints(exp).empty() ||
                list_checkpoints(exp).front().state != CheckpointState::Committed);
    EXPECT_FALSE(fs::exists(exp / "epoch1-global_step1"));
  }
}

TEST(DistCheckpointIO, InvalidValuesOnOneRankFailSaveOnEveryRankBeforeWriting) {
  for (bool async : {false, true}) {
    SCOPED_TRACE(async ? "async" : "sync");
    ckptio::testing::TempDir tmp;
    const fs::path exp = tmp / "exp";
    std::vector<char> save_returned(3, 0);
    const auto errors = run_ranks(3, 120s, [&](int rank, Communicator& comm) {
      CheckpointIOOptions o = fast();
      o.async = async;
      CheckpointIO io(comm, exp, o);
      auto rs = make_state(rank, 3, 1);
      if (rank == 1) rs->state.lr_scheduler->values = R"({"a.b": 1})";
      (void)io.save(rs->state);
      save_returned[size_t(rank)] = 1;
      io.wait();  // async: every rank's error comes from here
    });
    for (int r = 0; r < 3; ++r) {
      EXPECT_EQ(save_returned[size_t(r)] != 0, async) << "rank " << r;
      ASSERT_TRUE(errors[size_t(r)]);
      try {
        std::rethrow_exception(errors[size_t(r)]);
      } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::InvalidArgument) << e.what();
        EXPECT_NE(e.message().find("rank 1 of 3"), std::string::npos) << e.what();
      }
    }
    EXPECT_FALSE(fs::exists(exp / "epoch1-global_step1"));
  }
}

TEST(DistCheckpointIO, ASavedStepIsNotOverwrittenButADamagedOneIsMovedAside) {
  ckptio::testing::TempDir tmp;
  const fs::path exp = tmp / "exp";
  save_steps(2, exp, {1});
  for (bool async : {false, true}) {
    SCOPED_TRACE(async ? "async" : "sync");
    auto errors = run_ranks(2, 120s, [&](int rank, Communicator& comm) {
      CheckpointIO io(comm, exp, async ? fast_async(SnapshotMode::Copy) : fast());
      auto rs = make_state(rank, 2, 1);
      (void)io.save(rs->state);
      io.wait();  // async: the coordinator's refusal reaches every rank here
    });
    for (int r = 0; r < 2; ++r) {
      ASSERT_TRUE(errors[size_t(r)]);
      try {
        std::rethrow_exception(errors[size_t(r)]);
      } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::AlreadyExists) << e.what();
      }
    }
  }
  const fs::path victim = a_rank_file(exp / "epoch1-global_step1");
  fs::resize_file(victim, 3);
  save_steps(2, exp, {1});
  EXPECT_TRUE(fs::exists(exp / "epoch1-global_step1.damaged-1"));
  EXPECT_EQ(load_latest_steps(2, exp, VerifyDepth::Full), (std::vector<int64_t>{1, 1}));
}

TEST(DistCheckpointIOPlainData, ReadsPythonsDocumentAndRefusesMalformedOnes) {
  // As Python's ckptio.dist writes it: None for an unset batch size, a per-rank sampler.
  const std::string python = R"({"format": "ckptio.plain_data", "per_rank": {"sampler.index": [3, 4]},
      "values": {"running_states.batch_size": null, "running_states.extra": [{"a": 1}],
                 "sampler.seed": 7, "lr_scheduler.base_lrs": [0.1]}, "version": 1, "world_size": 2})";
  const detail::PlainData doc(python, "ckpt");
  EXPECT_EQ(doc.saved_world_size(), 2);
  EXPECT_TRUE(doc.has_prefix("sampler"));
  EXPECT_FALSE(doc.has_prefix("samp"));
  EXPECT_EQ(doc.rebuild("sampler", 1, 2, PerRankRule::Error), json::parse(R"({"index": 4, "seed": 7})"));
  EXPECT_EQ(doc.rebuild("sampler", 2, 3, PerRankRule::Rank0), json::parse(R"({"index": 3, "seed": 7})"));
  EXPECT_TRUE(doc.value("running_states.batch_size", 0, 2, PerRankRule::Error).is_null());
  EXPECT_THROW((void)doc.rebuild("sampler", 0, 1, PerRankRule::Error), Error);

  const auto corrupt = [](const std::string& text) {
    try {
      const detail::PlainData bad(text, "ckpt");
      (void)bad.rebuild("a", 0, 1, PerRankRule::Error);
    } catch (const Error& e) {
      return e.code() == ErrorCode::Corrupt;
    }
    return false;
  };
  const std::string head = R"({"format": "ckptio.plain_data", "version": 1, "world_size": 1, )";
  EXPECT_TRUE(corrupt("not json"));
  EXPECT_TRUE(corrupt(R"({"format": "other", "version": 1, "world_size": 1, "values": {}, "per_rank": {}})"));
  EXPECT_TRUE(corrupt(head + R"("values": {}, "per_rank": {"a.b": [1, 2]}})"));  // 2 values, 1 rank
  EXPECT_TRUE(corrupt(head + R"("values": {"a.b": 1, "a.b.c": 2}, "per_rank": {}})"));  // leaf and object
  EXPECT_FALSE(corrupt(head + R"("values": {"a.b": 1, "a.c.d": 2}, "per_rank": {}})"));
}

}  // namespace
}  // namespace ckptio::dist
