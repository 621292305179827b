// The benchmarks' shared parts: the raw limits move exactly the bytes they claim, a measurement
// that beats its limit is reported as LIMIT SUSPECT instead of a met goal, and a report is
// written to files only where --out says.
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ckptio/io.h"
#include "ckptio/parallel_reader.h"
#include "common/raw_limits.h"
#include "common/report.h"
#include "common/work_dir.h"

namespace ckptio::bench {
namespace {

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

std::vector<std::byte> pattern(size_t n, uint64_t seed) {
  std::vector<std::byte> v(n);
  fill_pseudo_random(v.data(), n, seed);
  return v;
}

class BenchCommon : public ::testing::Test {
 protected:
  WorkDir dir_{fs::temp_directory_path(), "bench-common-test-"};
};

TEST_F(BenchCommon, RawWriteWritesExactlyThePiecesBufferedAndDirect) {
  // Pieces of odd sizes and offsets (unaligned memory, a chunk spanning many pieces, a tail that
  // is not a whole block), two files.
  const auto a = pattern(3 * 4096 + 123, 1), b = pattern(70000, 2), c = pattern(5, 3);
  const auto d = pattern(2 * 65536 + 17, 4);
  std::vector<RawFile> files = {
      {dir_ / "one.bin", {std::span(a).subspan(1), std::span(b), std::span(c)}},
      {dir_ / "two.bin", {std::span(d)}}};
  for (const auto& [direct, writeback] : {std::pair{false, false}, {false, true}, {true, false}}) {
    SCOPED_TRACE(direct ? "O_DIRECT" : writeback ? "buffered + early writeback" : "buffered");
    const auto seconds = raw_write(files, {3, 8192}, direct, writeback);
    if (!seconds) {
      ASSERT_TRUE(direct) << "only O_DIRECT may be refused";
      continue;
    }
    EXPECT_GT(*seconds, 0);
    for (const RawFile& f : files) {
      std::string expect;
      for (const auto& p : f.pieces) expect.append(reinterpret_cast<const char*>(p.data()), p.size());
      EXPECT_EQ(read_file(f.path), expect) << f.path;
      fs::remove(f.path);
    }
  }
}

TEST_F(BenchCommon, RawParallelReadFillsTheFilesEndToEnd) {
  const auto a = pattern(100001, 5), b = pattern(3 * 8192 + 1, 6);
  io::write_file_atomic(io::Env::posix(), dir_ / "a", std::string_view(reinterpret_cast<const char*>(a.data()), a.size()));
  io::write_file_atomic(io::Env::posix(), dir_ / "b", std::string_view(reinterpret_cast<const char*>(b.data()), b.size()));
  std::vector<std::byte> dst(a.size() + b.size());
  raw_parallel_read({dir_ / "a", dir_ / "b"}, dst, {3, 4096});
  EXPECT_EQ(std::memcmp(dst.data(), a.data(), a.size()), 0);
  EXPECT_EQ(std::memcmp(dst.data() + a.size(), b.data(), b.size()), 0);
  EXPECT_GT(raw_read_fresh({dir_ / "a", dir_ / "b"}, {2, 8192}), 0);
}

TEST_F(BenchCommon, RawWriteBufferedWritesMorePiecesPerChunkThanOneCallTakes) {
  // 3000 pieces of 3 bytes in one 16 KiB chunk: more than IOV_MAX (1024) per pwritev.
  const auto bytes = pattern(3 * 3000 + 1, 11);
  RawFile f{dir_ / "many.bin", {}};
  for (size_t i = 0; i + 3 <= bytes.size(); i += 3) f.pieces.push_back(std::span(bytes).subspan(i, 3));
  f.pieces.push_back(std::span(bytes).subspan(bytes.size() - 1));
  ASSERT_TRUE(raw_write({f}, {2, 16384}, false).has_value());
  EXPECT_EQ(read_file(f.path), std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

TEST_F(BenchCommon, RawParallelReadFillsTheFilesInEverySchedule) {
  // Sizes that are not multiples of the chunk, so chunks end at file ends as well.
  const auto a = pattern(5 * 4096 + 7, 12), b = pattern(3 * 4096 + 1, 13);
  io::write_file_atomic(io::Env::posix(), dir_ / "a", std::string_view(reinterpret_cast<const char*>(a.data()), a.size()));
  io::write_file_atomic(io::Env::posix(), dir_ / "b", std::string_view(reinterpret_cast<const char*>(b.data()), b.size()));
  for (const ReadShape shape : {ReadShape{3, 4096, ReadSchedule::InOrder}, ReadShape{3, 4096, ReadSchedule::Split},
                                ReadShape{1, 4096, ReadSchedule::InOrder}, ReadShape{2, 8192, ReadSchedule::InOrder},
                                ReadShape{3, 4096, ReadSchedule::InOrder, true},
                                ReadShape{1, 8192, ReadSchedule::Split, true}}) {
    SCOPED_TRACE(describe(shape));
    std::vector<std::byte> dst(a.size() + b.size(), std::byte{0});
    raw_parallel_read({dir_ / "a", dir_ / "b"}, dst, shape);
    EXPECT_EQ(std::memcmp(dst.data(), a.data(), a.size()), 0);
    EXPECT_EQ(std::memcmp(dst.data() + a.size(), b.data(), b.size()), 0);
    // Each file at a page boundary: b after a's 6 pages.
    const size_t bytes = page_aligned_bytes({dir_ / "a", dir_ / "b"});
    ASSERT_EQ(bytes, 6 * 4096 + b.size());
    PrefaultedMemory aligned(bytes);
    raw_parallel_read_page_aligned({dir_ / "a", dir_ / "b"}, {aligned.data(), bytes}, shape);
    EXPECT_EQ(std::memcmp(aligned.data(), a.data(), a.size()), 0);
    EXPECT_EQ(std::memcmp(aligned.data() + 6 * 4096, b.data(), b.size()), 0);
  }
}

TEST_F(BenchCommon, ReadLimitIsTheFastestOfItsThreadCountsAndSchedules) {
  const auto a = pattern(100001, 14);
  io::write_file_atomic(io::Env::posix(), dir_ / "a", std::string_view(reinterpret_cast<const char*>(a.data()), a.size()));
  ReadLimit limit({3, 8192});
  EXPECT_FALSE(limit.seconds().has_value());
  limit.measure_prefaulted({dir_ / "a"});
  limit.measure_fresh({dir_ / "a"});
  const VariantTimes v = limit.variants();
  std::vector<std::string> names;
  for (const auto& [name, seconds] : v) names.push_back(name);
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"mmap + memcpy by 1 thread", "mmap + memcpy by 3 threads, chunks in order",
                                             "pread by 1 thread", "pread by 3 threads, a share each",
                                             "pread by 3 threads, chunks in order"}));
  ASSERT_TRUE(limit.seconds().has_value());
  for (const auto& [name, seconds] : v) EXPECT_LE(*limit.seconds(), seconds) << name;
  EXPECT_EQ(limit.description().rfind("8 KiB chunks, best: " + v.front().first, 0), 0u)
      << limit.description();
  // One thread asked for: nothing else to compare.
  ReadLimit one({1, 8192});
  one.measure_prefaulted({dir_ / "a"});
  names.clear();
  for (const auto& [name, seconds] : one.variants()) names.push_back(name);
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"mmap + memcpy by 1 thread", "pread by 1 thread"}));
}

TEST_F(BenchCommon, WriteLimitIsTheFastestOfItsBufferedAndDirectVariantsByOneAndAllThreads) {
  const auto a = pattern(3 * 8192 + 5, 15);
  const std::vector<RawFile> files = {{dir_ / "w.bin", {std::span(a).subspan(1)}}};
  WriteLimit limit({2, 8192});
  EXPECT_FALSE(limit.seconds().has_value());
  limit.measure(files);
  EXPECT_FALSE(fs::exists(files[0].path)) << "each run's file is removed";
  std::vector<std::string> names;
  for (const auto& [name, seconds] : limit.variants()) names.push_back(name);
  std::sort(names.begin(), names.end());
  std::vector<std::string> expect = {"O_DIRECT by 1 thread",
                                     "O_DIRECT by 2 threads",
                                     "buffered + early writeback by 1 thread",
                                     "buffered + early writeback by 2 threads",
                                     "buffered by 1 thread",
                                     "buffered by 2 threads"};
  if (names.size() == 4) expect.erase(expect.begin(), expect.begin() + 2);  // O_DIRECT refused
  EXPECT_EQ(names, expect);
  ASSERT_TRUE(limit.seconds().has_value());
  for (const auto& [name, seconds] : limit.variants()) EXPECT_LE(*limit.seconds(), seconds) << name;
  EXPECT_NE(limit.description().find("best: " + limit.variants().front().first), std::string::npos)
      << limit.description();
  EXPECT_TRUE(limit.unlink_seconds().has_value());
}

TEST_F(BenchCommon, WriteLimitRunsWhatItBoundsBetweenItsVariantsOneStepLaterEachRound) {
  const auto a = pattern(8192 + 3, 4);
  const std::vector<RawFile> files = {{dir_ / "w.bin", {std::span(a)}}};
  WriteLimit limit({2, 8192});
  std::vector<std::pair<int, size_t>> calls;  // (which, raw writes before it)
  const std::vector<std::function<void()>> between = {
      [&] { calls.emplace_back(0, limit.runs()); }, [&] { calls.emplace_back(1, limit.runs()); }};
  limit.measure(files, between);
  const size_t n = limit.runs();  // 6, or 4 where O_DIRECT is refused
  ASSERT_TRUE(n == 6 || n == 4) << n;
  limit.measure(files, between);
  ASSERT_EQ(limit.runs(), 2 * n);
  ASSERT_EQ(calls.size(), 4u);
  if (n == 4) {  // the O_DIRECT places stay in the rotation with no run: only the order is sure
    EXPECT_EQ(calls[0].first, 0);
    EXPECT_EQ(calls[1].first, 1);
    EXPECT_GE(calls[0].second, 1u);
    EXPECT_LT(calls[0].second, calls[1].second);
    EXPECT_LE(calls[1].second, n);
    EXPECT_GT(calls[2].second, n);
    GTEST_SKIP() << "this filesystem refuses O_DIRECT";
  }
  // Spread over the round (after the first run and after the middle one), one place later in the
  // next round.
  const std::vector<std::pair<int, size_t>> expect = {{0, 1}, {1, n / 2 + 1}, {0, n + 2}, {1, n + n / 2 + 2}};
  EXPECT_EQ(calls, expect);
}

TEST_F(BenchCommon, RawDirectReadReadsAFileWithAPartialLastBlock) {
  const auto a = pattern((size_t{3} << 20) + 5, 9);
  io::write_file_atomic(io::Env::posix(), dir_ / "a", std::string_view(reinterpret_cast<const char*>(a.data()), a.size()));
  const size_t padded = (a.size() + 4095) / 4096 * 4096;
  const std::shared_ptr<std::byte> dst = io::allocate_read_buffer(padded);
  for (const ReadSchedule schedule : {ReadSchedule::InOrder, ReadSchedule::Split}) {
    std::memset(dst.get(), 0, padded);
    if (!raw_direct_read(dir_ / "a", {dst.get(), padded}, {3, 1 << 20, schedule})) {
      GTEST_SKIP() << "this filesystem refuses O_DIRECT";
    }
    EXPECT_EQ(std::memcmp(dst.get(), a.data(), a.size()), 0);
  }
  EXPECT_TRUE(raw_read_fresh_direct(dir_ / "a", {3, 1 << 20}).has_value());
}

TEST_F(BenchCommon, ParallelMemcpyCopiesEachPieceToThe64ByteBoundaryAfterThePreviousOne) {
  const auto a = pattern(10000, 7), b = pattern(33, 8);
  const std::vector<std::span<const std::byte>> sources = {a, b};
  ASSERT_EQ(parallel_memcpy_bytes(sources), 10048u + 64u);
  std::vector<std::byte> dst(parallel_memcpy_bytes(sources));
  parallel_memcpy(sources, dst.data(), 3, 1000);
  EXPECT_EQ(std::memcmp(dst.data(), a.data(), a.size()), 0);
  EXPECT_EQ(std::memcmp(dst.data() + 10048, b.data(), b.size()), 0);
}

Report sample_report() {
  Report r("bench-x", "sample");
  r.add({Group::Limit, "raw", 1.0, 1000, "", "", ""});
  r.add({Group::Peer, "peer", 4.0, 1000, "raw", "", ""});
  r.add({Group::Ckptio, "slow", 2.0, 1000, "raw", "peer", ""});
  r.add({Group::Ckptio, "close", 0.97, 1000, "raw", "", ""});   // 1.03x: noise, not suspect
  r.add({Group::Ckptio, "too fast", 0.5, 1000, "raw", "", ""});  // 2x its limit
  r.goal(Goal::ratio("slow vs raw", "slow", "raw", 0.9));
  r.goal(Goal::ratio("slow vs peer", "slow", "peer", 1.5));
  r.goal(Goal::ratio("close vs raw", "close", "raw", 0.9));
  r.goal(Goal::ratio("too fast vs raw", "too fast", "raw", 0.9));
  r.goal(Goal::at_most("close in ms", "close", 900, 1e3, "ms"));
  return r;
}

TEST(BenchReport, AMeasurementAboveItsLimitIsLimitSuspectNotMet) {
  const Report r = sample_report();
  EXPECT_FALSE(r.limit_suspect(*r.find("slow")));
  EXPECT_FALSE(r.limit_suspect(*r.find("close")));
  EXPECT_TRUE(r.limit_suspect(*r.find("too fast")));
  const auto j = r.json();
  std::vector<std::string> status;
  for (const auto& g : j.at("goals")) status.push_back(g.at("status"));
  EXPECT_EQ(status, (std::vector<std::string>{"NOT met", "met", "met", "LIMIT SUSPECT", "NOT met"}));
  EXPECT_DOUBLE_EQ(j.at("goals")[1].at("value").get<double>(), 2.0);  // 4 s / 2 s
  const std::string md = r.markdown();
  EXPECT_NE(md.find("2.00x raw (LIMIT SUSPECT)"), std::string::npos) << md;
  EXPECT_NE(md.find(R"(LIMIT SUSPECT: "too fast" ran at 2.00x "raw")"), std::string::npos) << md;
}

TEST(BenchReport, RatiosCompareThroughputWhenByteCountsDiffer) {
  Report r("bench-x", "sample");
  r.add({Group::Limit, "raw", 1.0, 2000, "", "", ""});
  r.add({Group::Ckptio, "half the bytes", 1.0, 1000, "raw", "", ""});
  EXPECT_DOUBLE_EQ(*r.ratio(*r.find("half the bytes"), "raw"), 0.5);
}

TEST_F(BenchCommon, ReportWritesFilesOnlyWhereOutSays) {
  const Report r = sample_report();
  const fs::path cwd = fs::current_path();
  const fs::path here = dir_ / "cwd";
  fs::create_directories(here);
  fs::current_path(here);
  Options o;
  testing::internal::CaptureStdout();
  r.emit(o);
  const std::string printed = testing::internal::GetCapturedStdout();
  fs::current_path(cwd);
  EXPECT_NE(printed.find("# bench-x: sample"), std::string::npos);
  EXPECT_TRUE(fs::is_empty(here)) << "no --out: nothing written";
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_.path()), fs::directory_iterator()), 1);

  o.out = dir_ / "results";
  o.json = true;
  testing::internal::CaptureStdout();
  r.emit(o);
  const std::string json_printed = testing::internal::GetCapturedStdout();
  EXPECT_EQ(nlohmann::json::parse(json_printed).at("program"), "bench-x");
  EXPECT_EQ(nlohmann::json::parse(read_file(dir_ / "results" / "bench-x.json")).at("rows").size(), 5u);
  EXPECT_NE(read_file(dir_ / "results" / "bench-x.md").find("| limit | raw |"), std::string::npos);
}

}  // namespace
}  // namespace ckptio::bench
