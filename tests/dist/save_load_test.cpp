// Save on N ranks, load on M, bit-exact, for every layout; the commit's failure rules.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <regex>
#include <thread>

#include <nlohmann/json.hpp>

#include "checkpoint/manifest.h"
#include "ckptio/error.h"
#include "ckptio/fault_env.h"
#include "ckptio/load.h"
#include "ckptio/safetensors.h"
#include "dist_helpers.h"
#include "support/test_util.h"

namespace ckptio::dist {
namespace {

using namespace std::chrono_literals;
using testing::error_message;
using testing::global_bytes;
using testing::Layout;
using testing::local_bytes;
using testing::pieces_for;
using testing::run_ranks;
namespace fs = std::filesystem;

using testing::Spec;
using testing::specs;

void save_on(int world, const fs::path& dir, const SaveOptions& options = {}) {
  const auto errors = testing::save_on_ranks(world, dir, specs(), options);
  for (int r = 0; r < world; ++r) ASSERT_EQ(error_message(errors[size_t(r)]), "") << "rank " << r;
}

// Loads every tensor on `world` ranks in layout `l` and compares with the full tensor.
void load_and_check(int world, const fs::path& dir, Layout l) {
  std::vector<std::thread> threads;
  std::vector<std::string> failures(static_cast<size_t>(world));
  for (int rank = 0; rank < world; ++rank) {
    threads.emplace_back([&, rank] {
      try {
        std::vector<std::vector<std::byte>> buffers;
        std::vector<LoadItem> items;
        std::vector<std::vector<std::byte>> expected;
        for (const Spec& s : specs()) {
          const auto global = global_bytes(s.name, s.dtype, s.shape);
          for (ShardedTensor& t : pieces_for(s.name, s.dtype, s.shape, l, rank, world)) {
            expected.push_back(local_bytes(t, global));
            buffers.emplace_back(t.local_nbytes(), std::byte{0x5a});
            items.push_back({std::move(t), {}});
          }
        }
        for (size_t i = 0; i < items.size(); ++i) items[i].bytes = buffers[i];
        load(dir, items);
        for (size_t i = 0; i < items.size(); ++i) {
          if (buffers[i] != expected[i]) failures[size_t(rank)] += items[i].tensor.name + " ";
        }
      } catch (const std::exception& e) {
        failures[size_t(rank)] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < world; ++r) {
    EXPECT_EQ(failures[size_t(r)], "") << "load rank " << r << " of " << world << " as "
                                        << testing::layout_name(l);
  }
}

TEST(DistSaveLoad, EveryLayoutSavedOnNLoadsBitExactOnM) {
  for (int n : {1, 2, 4}) {
    ckptio::testing::TempDir tmp;
    const fs::path dir = tmp / "ckpt";
    save_on(n, dir);
    ASSERT_TRUE(fs::exists(dir / std::string(kIndexName)));
    for (int m : {1, 2, 4}) {
      for (Layout l : {Layout::Replicated, Layout::Rows, Layout::Grid, Layout::Flat, Layout::TwoRowBlocks}) {
        SCOPED_TRACE("saved on " + std::to_string(n) + ", loaded on " + std::to_string(m) + " as " +
                     testing::layout_name(l));
        load_and_check(m, dir, l);
      }
    }
  }
}

TEST(DistSaveLoad, ReadsOnlyTheIntersectingBytes) {
  ckptio::testing::TempDir tmp;
  const fs::path dir = tmp / "ckpt";
  save_on(4, dir);
  // One row of "rows" (12 bytes) needs 12 bytes, whatever the file sizes.
  std::vector<std::byte> buf(12);
  const LoadItem item{ShardedTensor::block("rows", DType::BF16, {10, 6}, {7, 0}, {1, 6}), buf};
  const LoadReport r = load(dir, std::span(&item, 1));
  EXPECT_EQ(r.bytes_read, 12u);
  EXPECT_EQ(r.reads, 1u);
}

TEST(DistSaveLoad, ReadsAreSortedByFileOffsetAndMergedWhateverTheItemOrder) {
  ckptio::testing::TempDir tmp;
  const fs::path dir = tmp / "ckpt";
  std::vector<uint16_t> w(10 * 6);
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<uint16_t>(i * 7 + 1);
  const SaveItem whole{ShardedTensor::replicated("w", DType::BF16, {10, 6}), std::as_bytes(std::span(w))};
  save(*single_process_communicator(), dir, std::span(&whole, 1));
  // Rows 5-9 listed first, rows 0-4 second, into the two halves of one buffer: after sorting by
  // offset they are contiguous in the file and in memory, so one pread fills both.
  std::vector<uint16_t> got(w.size());
  const std::span<std::byte> bytes = std::as_writable_bytes(std::span(got));
  const std::vector<LoadItem> items{
      {ShardedTensor::block("w", DType::BF16, {10, 6}, {5, 0}, {5, 6}), bytes.subspan(60)},
      {ShardedTensor::block("w", DType::BF16, {10, 6}, {0, 0}, {5, 6}), bytes.first(60)}};
  const LoadReport r = load(dir, items);
  EXPECT_EQ(r.reads, 1u);
  EXPECT_EQ(r.bytes_read, 120u);
  EXPECT_EQ(got, w);
}

TEST(DistSaveLoad, PerRankFilesCarryPyTorchsShardingMetadata) {
  ckptio::testing::TempDir tmp;
  const fs::path dir = tmp / "ckpt";
  save_on(2, dir);
  const std::regex name(R"(shard-0000([12])-model-(\d{5})-of-(\d{5})\.safetensors)");
  size_t files = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string f = entry.path().filename().string();
    if (f == kIndexName || f == checkpoint::kManifestName) continue;
    std::smatch m;
    ASSERT_TRUE(std::regex_match(f, m, name)) << f;  // in the folder itself, as PyTorch writes them
    ++files;
    const SafetensorsReader reader = SafetensorsReader::open(entry.path());
    ASSERT_TRUE(reader.metadata());
    const Metadata& md = *reader.metadata();
    EXPECT_EQ(md.at("DCP_VERSION"), "1.0");
    EXPECT_EQ(md.at("format"), "pt");
    const auto info = nlohmann::json::parse(md.at("DCP_SHARDING_INFO"));
    ASSERT_EQ(info.size(), reader.tensors().size()) << f;
    for (const TensorInfo& t : reader.tensors()) {
      ASSERT_TRUE(info.contains(t.name)) << t.name;
      EXPECT_EQ(info[t.name]["saved_offsets"].size(), t.shape.size()) << t.name;
    }
  }
  EXPECT_GE(files, 4u);  // two_blocks needs two files per rank
  // The manifest lists every file with its size and checksum, and they verify.
  io::Env& env = io::Env::posix();
  const checkpoint::Manifest manifest = checkpoint::read_manifest(env, dir);
  EXPECT_EQ(manifest.files.size(), files + 1);
  const auto check = checkpoint::check_manifest(env, dir, manifest, /*full=*/true);
  EXPECT_TRUE(check.problems.empty()) << check.problems.front();
  EXPECT_TRUE(check.checksums_checked);
}

TEST(DistSaveLoad, AnIoErrorOnOneRankFailsEveryRankAndCommitsNothing) {
  ckptio::testing::TempDir tmp;
  const fs::path dir = tmp / "ckpt";
  io::FaultInjectingEnv faulty;
  faulty.inject(io::Fault{io::FaultOp::Write, 1, EIO, "shard-00003-", true});
  const auto errors = run_ranks(4, 120s, [&](int rank, Communicator& comm) {
    const auto global = global_bytes("w", DType::F32, {8, 4});
    const ShardedTensor t = pieces_for("w", DType::F32, {8, 4}, Layout::Rows, rank, 4)[0];
    const auto bytes = local_bytes(t, global);
    const SaveItem item{t, bytes};
    SaveOptions o;
    o.sync = false;
    if (rank == 2) o.env = &faulty;  // rank 2 writes shard-00003-*
    save(comm, dir, std::span(&item, 1), o);
  });
  for (int r = 0; r < 4; ++r) {
    ASSERT_TRUE(errors[size_t(r)]) << "rank " << r << " returned success";
    try {
      std::rethrow_exception(errors[size_t(r)]);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::IoError) << e.what();
      EXPECT_NE(e.message().find("writing shards: rank 2 of 4 failed"), std::string::npos) << e.what();
    }
  }
  EXPECT_FALSE(fs::exists(dir));
  EXPECT_TRUE(fs::is_empty(tmp.path())) << "temp folder left behind";
}

TEST(DistSaveLoad, ARankThatNeverCallsTimesOutTheSaveAndCommitsNothing) {
  ckptio::testing::TempDir tmp;
  const fs::path dir = tmp / "ckpt";
  const auto errors = testing::run_first_ranks(make_thread_group(3, 300ms), 2, [&](int, Communicator& comm) {
    std::vector<float> v(4, 1.0f);
    const SaveItem item{ShardedTensor::replicated("w", DType::F32, {4}), std::as_bytes(std::span(v))};
    save(comm, dir, std::span(&item, 1));
  });
  for (const auto& e : errors) {
    ASSERT_TRUE(e);
    try {
      std::rethrow_exception(e);
    } catch (const Error& err) {
      EXPECT_EQ(err.code(), ErrorCode::Timeout) << err.what();
      EXPECT_NE(err.message().find("rank(s) 2 of 3"), std::string::npos) << err.what();
    }
  }
  EXPECT_FALSE(fs::exists(dir));
  EXPECT_TRUE(fs::is_empty(tmp.path()));
}

TEST(DistSaveLoad, RanksThatDisagreeOrLeaveGapsCommitNothing) {
  ckptio::testing::TempDir tmp;
  const fs::path dir = tmp / "ckpt";
  for (int variant = 0; variant < 2; ++variant) {
    const auto errors = run_ranks(2, 120s, [&](int rank, Communicator& comm) {
      std::vector<std::byte> bytes(64);
      // variant 0: rank 1 says the tensor is [9, 4]; variant 1: nobody saves rows 6..8.
      const Shape shape = (variant == 0 && rank == 1) ? Shape{9, 4} : Shape{8, 4};
      const int64_t rows = variant == 1 && rank == 1 ? 2 : 4;
      const SaveItem item{ShardedTensor::block("w", DType::U16, shape, {rank * 4, 0}, {rows, 4}),
                          std::span(bytes).first(size_t(rows * 8))};
      SaveOptions o;
      o.sync = false;
      save(comm, dir, std::span(&item, 1), o);
    });
    for (const auto& e : errors) {
      const std::string m = error_message(e);
      EXPECT_NE(m.find("invalid_argument: saving distributed checkpoint"), std::string::npos) << m;
      EXPECT_NE(m.find(variant == 0 ? "on rank 1" : "cover 24 of 32 elements"), std::string::npos) << m;
    }
    EXPECT_FALSE(fs::exists(dir));
  }
}

TEST(DistSaveLoad, AnExistingCheckpointIsKeptUnlessReplaced) {
  ckptio::testing::TempDir tmp;
  const fs::path dir = tmp / "ckpt";
  save_on(2, dir);
  const auto errors = run_ranks(2, 120s, [&](int, Communicator& comm) {
    std::vector<float> v(4, 2.0f);
    const SaveItem item{ShardedTensor::replicated("other", DType::F32, {4}), std::as_bytes(std::span(v))};
    save(comm, dir, std::span(&item, 1));
  });
  for (const auto& e : errors) EXPECT_NE(error_message(e).find("already_exists"), std::string::npos);
  SaveOptions replace;
  replace.replace = true;
  save_on(4, dir, replace);
  load_and_check(2, dir, Layout::Rows);
}

// Saves the test specs on 2 ranks, rank r through envs[r], durably; returns the data files written.
size_t save_through(std::array<io::FaultInjectingEnv, 2>& envs, const fs::path& dir,
                    const SaveOptions& options) {
  std::atomic<size_t> files{0};
  const auto errors = run_ranks(2, 120s, [&](int rank, Communicator& comm) {
    std::vector<std::vector<std::byte>> buffers;
    std::vector<SaveItem> items;
    for (const Spec& s : specs()) {
      const auto global = global_bytes(s.name, s.dtype, s.shape);
      for (ShardedTensor& t : pieces_for(s.name, s.dtype, s.shape, s.saved, rank, 2)) {
        buffers.push_back(local_bytes(t, global));
        items.push_back({std::move(t), {}});
      }
    }
    for (size_t i = 0; i < items.size(); ++i) items[i].bytes = buffers[i];
    SaveOptions o = options;
    o.env = &envs[size_t(rank)];
    files += save(comm, dir, items, o).files.size();
  });
  for (int r = 0; r < 2; ++r) EXPECT_EQ(error_message(errors[size_t(r)]), "") << "rank " << r;
  return files;
}

uint64_t total(const std::array<io::FaultInjectingEnv, 2>& envs, io::FaultOp op) {
  return envs[0].count(op) + envs[1].count(op);
}

TEST(DistSaveLoad, EachFileIsSyncedOnceAndOnlyTheFolderIsRenamed) {
  ckptio::testing::TempDir tmp;
  std::array<io::FaultInjectingEnv, 2> envs{io::FaultInjectingEnv(io::Env::posix()),
                                            io::FaultInjectingEnv(io::Env::posix())};
  const size_t files = save_through(envs, tmp / "ckpt", {});
  ASSERT_GE(files, 4u);
  // The data files, the index and the manifest are created in the uncommitted folder: one fsync
  // each, no temp name of their own; the folder is synced, renamed into place, its parent synced.
  EXPECT_EQ(total(envs, io::FaultOp::Sync), files + 2);
  EXPECT_EQ(total(envs, io::FaultOp::Rename), 1u);
  EXPECT_EQ(total(envs, io::FaultOp::SyncDir), 2u);
  load_and_check(2, tmp / "ckpt", Layout::Rows);
}

TEST(DistSaveLoad, TheWriterOptionsReachEveryRanksFiles) {
  ckptio::testing::TempDir tmp;
  std::array<io::FaultInjectingEnv, 2> plain{io::FaultInjectingEnv(io::Env::posix()),
                                             io::FaultInjectingEnv(io::Env::posix())};
  const size_t files = save_through(plain, tmp / "plain", {});
  io::AsyncWriterOptions direct_writer;
  direct_writer.direct_io = true;
  SaveOptions o;
  o.writer = &direct_writer;
  std::array<io::FaultInjectingEnv, 2> direct{io::FaultInjectingEnv(io::Env::posix()),
                                              io::FaultInjectingEnv(io::Env::posix())};
  ASSERT_EQ(save_through(direct, tmp / "direct", o), files);
  // direct_io: every data file also gets its O_DIRECT companion (asked for even where the file
  // system refuses it, as tmpfs does), and the checkpoint is the same.
  EXPECT_EQ(total(direct, io::FaultOp::Open), total(plain, io::FaultOp::Open) + files);
  for (Layout l : {Layout::Rows, Layout::Flat, Layout::Grid}) load_and_check(2, tmp / "direct", l);
}

TEST(DistSaveLoad, BadItemsAreRefusedOnEveryRank) {
  ckptio::testing::TempDir tmp;
  std::vector<std::byte> bytes(16);
  const std::vector<SaveItem> bad{
      {ShardedTensor::block("w", DType::F32, {4}, {2}, {3}), std::span(bytes).first(12)},  // outside
      {ShardedTensor::replicated("w", DType::F32, {4}), std::span(bytes).first(12)},       // size
      {ShardedTensor::flat("w", DType::F4, {4}, 0, 4), std::span(bytes).first(2)},        // sub-byte
  };
  for (const SaveItem& item : bad) {
    const auto errors = run_ranks(2, 120s, [&](int rank, Communicator& comm) {
      std::vector<std::byte> ok(16);
      const SaveItem good{ShardedTensor::replicated("w", DType::F32, {4}), ok};
      save(comm, tmp / "ckpt", std::span(rank == 1 ? &item : &good, 1));
    });
    for (const auto& e : errors) {
      EXPECT_NE(error_message(e).find("invalid_argument: saving distributed checkpoint"), std::string::npos)
          << error_message(e);
      EXPECT_NE(error_message(e).find("rank 1 of 2"), std::string::npos) << error_message(e);
    }
    EXPECT_FALSE(fs::exists(tmp / "ckpt"));
  }
}

TEST(DistSaveLoad, LoadCheckpointReadsADistributedCheckpointAsFullTensors) {
  ckptio::testing::TempDir tmp;
  const fs::path dir = tmp / "ckpt";
  save_on(4, dir);
  const LoadedCheckpoint loaded = load_checkpoint(dir);
  EXPECT_EQ(loaded.report.source.kind, SourceKind::DistributedFolder);
  ASSERT_EQ(loaded.tensors.size(), specs().size());
  for (const Spec& s : specs()) {
    const Tensor& t = loaded.tensors.at(s.name);
    EXPECT_EQ(t.dtype(), s.dtype);
    EXPECT_EQ(t.shape(), s.shape);
    const auto want = global_bytes(s.name, s.dtype, s.shape);
    EXPECT_TRUE(std::equal(want.begin(), want.end(), t.bytes().begin(), t.bytes().end())) << s.name;
  }
  // Into caller buffers, with a widening conversion, and through the index file's path.
  std::vector<float> rows(60);
  const LoadTarget target{"rows", DType::F32, {10, 6}, std::as_writable_bytes(std::span(rows))};
  ckptio::LoadOptions lo;
  lo.strict = false;
  const ckptio::LoadReport report = load_checkpoint(dir / std::string(kIndexName), std::span(&target, 1), lo);
  EXPECT_EQ(report.loaded, std::vector<std::string>{"rows"});
  const auto bf16 = global_bytes("rows", DType::BF16, {10, 6});
  for (size_t i = 0; i < 60; ++i) {
    uint16_t bits;
    std::memcpy(&bits, bf16.data() + 2 * i, 2);
    const float want = bf16_to_f32(bits);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(rows[i]));
    } else {
      EXPECT_EQ(rows[i], want) << i;
    }
  }
}

}  // namespace
}  // namespace ckptio::dist
