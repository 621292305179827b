// FaultInjectingEnv: decides per call whether to fail, then delegates to the base Env. Writes and
// reads go through the shared retry loops with an "attempt" that can be cut short or interrupted,
// so the loops production code uses are the ones under test.
#include "ckptio/fault_env.h"

#include <algorithm>
#include <array>
#include <string>

#include "ckptio/error.h"
#include "io/direct_io.h"
#include "io/io_loop.h"

namespace ckptio::io {

struct FaultInjectingEnv::State {
  std::mutex mu;
  std::vector<Fault> faults;
  std::vector<uint64_t> matched;  // per armed fault: matching calls since it was armed
  std::array<uint64_t, 12> counts{};
  size_t short_writes = 0;
  uint64_t eintr_every = 0;
  uint64_t attempts = 0;
  bool crash_armed = false;
  uint64_t mutating_left = 0;
  bool crashed = false;
  uint64_t fired = 0;
  uint64_t written = 0;
  int refuse_exchange = 0;

  static bool mutating(FaultOp op) {
    return op != FaultOp::Open && op != FaultOp::Read && op != FaultOp::Lock;
  }

  // Counts the call and returns the errno it must fail with, or 0 to let it through.
  int check(FaultOp op, const fs::path& path) {
    std::lock_guard lock(mu);
    const auto i = static_cast<size_t>(op);
    ++counts[i];
    if (crashed) {
      ++fired;
      return EIO;
    }
    for (size_t f = 0; f < faults.size(); ++f) {
      const Fault& fault = faults[f];
      if (fault.op != op) continue;
      if (!fault.path_contains.empty() &&
          path.string().find(fault.path_contains) == std::string::npos) {
        continue;
      }
      const uint64_t k = ++matched[f];
      if (k == fault.nth || (fault.sticky && k > fault.nth)) {
        ++fired;
        return fault.error;
      }
    }
    if (crash_armed && mutating(op)) {
      if (mutating_left == 0) {
        crashed = true;
        ++fired;
        return EIO;
      }
      --mutating_left;
    }
    return 0;
  }

  // Before each read/write attempt: EINTR injection and crash checks. Returns errno or 0.
  int attempt_fault() {
    std::lock_guard lock(mu);
    if (crashed) {
      ++fired;
      return EIO;
    }
    ++attempts;
    if (eintr_every != 0 && attempts % eintr_every == 0) {
      ++fired;
      return EINTR;
    }
    return 0;
  }

  // `align` > 1 for O_DIRECT files: a short write still moves whole blocks, as the kernel's
  // would (a ragged length would fail with EINVAL instead of testing the continuation).
  size_t clamp_write(size_t want, size_t align) {
    std::lock_guard lock(mu);
    if (short_writes != 0 && want > short_writes) {
      const size_t cut = std::max(short_writes / align * align, align);
      if (cut >= want) return want;
      ++fired;
      return cut;
    }
    return want;
  }

  void add_written(size_t n) {
    std::lock_guard lock(mu);
    written += n;
  }
};

namespace {

[[noreturn]] void fail(int error, std::string_view what, const fs::path& path) {
  throw system_error(error, std::string(what) + " '" + path.string() + "' (injected fault)");
}

// Copies out of mappings are not offered (read_if_cached stays Unknown), so that every read of a
// file from this Env is a read_exact that faults can target. The O_DIRECT twin is: direct()
// counts as an Open (an injected error there makes it refused, as a filesystem without O_DIRECT
// would) and its reads meet the same Read faults and EINTR.
class FaultReadableFile final : public ReadableFile {
 public:
  FaultReadableFile(std::unique_ptr<ReadableFile> base, std::shared_ptr<FaultInjectingEnv::State> s)
      : owned_(std::move(base)), base_(owned_.get()), state_(std::move(s)) {}
  // A file the base owns (its O_DIRECT twin).
  FaultReadableFile(const ReadableFile& base, std::shared_ptr<FaultInjectingEnv::State> s)
      : base_(&base), state_(std::move(s)) {}
  const fs::path& path() const override { return base_->path(); }
  uint64_t size() const override { return base_->size(); }
  const ReadableFile& base() const { return *base_; }

  void read_exact(uint64_t offset, std::span<std::byte> dst) const override {
    if (const int e = state_->check(FaultOp::Read, path())) {
      detail::throw_read_error(e, path(), offset);
    }
    detail::read_all(path(), offset, dst, [&](std::byte* p, size_t n, uint64_t off) -> ssize_t {
      if (const int e = state_->attempt_fault()) {
        errno = e;
        return -1;
      }
      base_->read_exact(off, {p, n});
      return static_cast<ssize_t>(n);
    });
  }

  const ReadableFile* direct() const override {
    std::call_once(direct_once_, [&] {
      if (state_->check(FaultOp::Open, path()) != 0) return;
      if (const ReadableFile* d = base_->direct()) {
        direct_ = std::make_unique<FaultReadableFile>(*d, state_);
      }
    });
    return direct_.get();
  }

 private:
  std::unique_ptr<ReadableFile> owned_;
  const ReadableFile* base_;
  std::shared_ptr<FaultInjectingEnv::State> state_;
  mutable std::once_flag direct_once_;
  mutable std::unique_ptr<FaultReadableFile> direct_;
};

// Both write paths see the same faults: write_at (the Env's own loop) and engines that submit on
// fd() themselves and call plan_write/write_completed around each attempt. The descriptor is the
// base file's, so an io_uring or O_DIRECT submission stays zero-copy.
class FaultWritableFile final : public WritableFile {
 public:
  FaultWritableFile(std::unique_ptr<WritableFile> base, std::shared_ptr<FaultInjectingEnv::State> s,
                    bool direct = false)
      : base_(std::move(base)), state_(std::move(s)), align_(direct ? detail::kDirectBlock : 1) {}
  const fs::path& path() const override { return base_->path(); }
  int fd() const override { return base_->fd(); }

  WritePlan plan_write(uint64_t offset, size_t len, bool first) override {
    (void)offset;
    if (first) {
      if (const int e = state_->check(FaultOp::Write, path())) return {0, e};
    }
    if (const int e = state_->attempt_fault()) return {0, e};
    return {state_->clamp_write(len, align_), 0};
  }
  void write_completed(uint64_t offset, ssize_t result) override {
    (void)offset;
    if (result > 0) state_->add_written(static_cast<size_t>(result));
  }

  void write_at(uint64_t offset, std::span<const std::byte> src) override {
    if (const int e = state_->check(FaultOp::Write, path())) {
      detail::throw_write_error(e, path(), offset);
    }
    detail::write_all(path(), offset, src,
                      [&](const std::byte* p, size_t n, uint64_t off) -> ssize_t {
                        if (const int e = state_->attempt_fault()) {
                          errno = e;
                          return -1;
                        }
                        const size_t m = state_->clamp_write(n, align_);
                        base_->write_at(off, {p, m});
                        state_->add_written(m);
                        return static_cast<ssize_t>(m);
                      });
  }

  void truncate(uint64_t size) override {
    if (const int e = state_->check(FaultOp::Truncate, path())) fail(e, "truncate", path());
    base_->truncate(size);
  }
  void sync() override {
    if (const int e = state_->check(FaultOp::Sync, path())) fail(e, "fsync", path());
    base_->sync();
  }
  void close() override {
    if (const int e = state_->check(FaultOp::Close, path())) {
      // Like close(2): the descriptor is gone even when close reports an error.
      try {
        base_->close();
      } catch (...) {
      }
      fail(e, "close", path());
    }
    base_->close();
  }

 private:
  std::unique_ptr<WritableFile> base_;
  std::shared_ptr<FaultInjectingEnv::State> state_;
  size_t align_;
};

}  // namespace

FaultInjectingEnv::FaultInjectingEnv(Env& base)
    : base_(base), state_(std::make_shared<State>()) {}

FaultInjectingEnv::~FaultInjectingEnv() = default;

void FaultInjectingEnv::inject(const Fault& fault) {
  if (fault.nth == 0) throw Error(ErrorCode::InvalidArgument, "fault nth is 1-based");
  std::lock_guard lock(state_->mu);
  state_->faults.push_back(fault);
  state_->matched.push_back(0);
}

void FaultInjectingEnv::inject(FaultOp op, uint64_t nth, int error) {
  Fault f;
  f.op = op;
  f.nth = nth;
  f.error = error;
  inject(f);
}

void FaultInjectingEnv::set_short_writes(size_t max_bytes) {
  std::lock_guard lock(state_->mu);
  state_->short_writes = max_bytes;
}

void FaultInjectingEnv::set_eintr_every(uint64_t every) {
  std::lock_guard lock(state_->mu);
  state_->eintr_every = every;
}

void FaultInjectingEnv::crash_after(uint64_t ops) {
  std::lock_guard lock(state_->mu);
  state_->crash_armed = true;
  state_->mutating_left = ops;
  if (ops == 0) state_->crashed = true;
}

void FaultInjectingEnv::crash_now() { crash_after(0); }

bool FaultInjectingEnv::crashed() const {
  std::lock_guard lock(state_->mu);
  return state_->crashed;
}

void FaultInjectingEnv::refuse_exchange(int error) {
  std::lock_guard lock(state_->mu);
  state_->refuse_exchange = error;
}

void FaultInjectingEnv::clear() {
  std::lock_guard lock(state_->mu);
  state_->faults.clear();
  state_->matched.clear();
  state_->short_writes = 0;
  state_->eintr_every = 0;
  state_->crash_armed = false;
  state_->crashed = false;
}

uint64_t FaultInjectingEnv::count(FaultOp op) const {
  std::lock_guard lock(state_->mu);
  return state_->counts[static_cast<size_t>(op)];
}

uint64_t FaultInjectingEnv::faults_fired() const {
  std::lock_guard lock(state_->mu);
  return state_->fired;
}

uint64_t FaultInjectingEnv::bytes_written() const {
  std::lock_guard lock(state_->mu);
  return state_->written;
}

std::unique_ptr<ReadableFile> FaultInjectingEnv::open_read(const fs::path& path) {
  if (const int e = state_->check(FaultOp::Open, path)) fail(e, "open", path);
  return std::make_unique<FaultReadableFile>(base_.open_read(path), state_);
}

std::unique_ptr<WritableFile> FaultInjectingEnv::open_write(const fs::path& path, OpenMode mode) {
  if (const int e = state_->check(FaultOp::Open, path)) fail(e, "create", path);
  return std::make_unique<FaultWritableFile>(base_.open_write(path, mode), state_);
}

std::shared_ptr<const MappedFile> FaultInjectingEnv::map_read(const fs::path& path) {
  if (const int e = state_->check(FaultOp::Open, path)) fail(e, "mmap", path);
  return base_.map_read(path);
}

std::shared_ptr<const MappedFile> FaultInjectingEnv::map_open_file(const ReadableFile& file) {
  if (const int e = state_->check(FaultOp::Open, file.path())) fail(e, "mmap", file.path());
  const auto* ours = dynamic_cast<const FaultReadableFile*>(&file);
  return base_.map_open_file(ours != nullptr ? ours->base() : file);
}

void FaultInjectingEnv::rename(const fs::path& from, const fs::path& to) {
  if (const int e = state_->check(FaultOp::Rename, to)) {
    throw system_error(e, "rename '" + from.string() + "' to '" + to.string() +
                              "' (injected fault)");
  }
  base_.rename(from, to);
}

void FaultInjectingEnv::exchange(const fs::path& a, const fs::path& b) {
  int refused = 0;
  {
    std::lock_guard lock(state_->mu);
    refused = state_->refuse_exchange;
  }
  if (refused == EINVAL || refused == ENOSYS) {
    throw Error(ErrorCode::Unsupported, "atomic exchange of '" + a.string() + "' and '" +
                                            b.string() + "' is not supported here (refused)");
  }
  if (refused != 0) {
    throw system_error(refused, "exchange '" + a.string() + "' and '" + b.string() +
                                    "' (refused)");
  }
  if (const int e = state_->check(FaultOp::Rename, b)) {
    throw system_error(e, "exchange '" + a.string() + "' and '" + b.string() +
                              "' (injected fault)");
  }
  base_.exchange(a, b);
}

void FaultInjectingEnv::sync_dir(const fs::path& dir) {
  if (const int e = state_->check(FaultOp::SyncDir, dir)) fail(e, "fsync directory", dir);
  base_.sync_dir(dir);
}

void FaultInjectingEnv::remove(const fs::path& path) {
  if (const int e = state_->check(FaultOp::Remove, path)) fail(e, "remove", path);
  base_.remove(path);
}

void FaultInjectingEnv::remove_all(const fs::path& path) {
  if (const int e = state_->check(FaultOp::Remove, path)) fail(e, "remove", path);
  base_.remove_all(path);
}

void FaultInjectingEnv::create_dirs(const fs::path& path) {
  if (const int e = state_->check(FaultOp::Mkdir, path)) fail(e, "create directory", path);
  base_.create_dirs(path);
}

std::vector<std::string> FaultInjectingEnv::list_dir(const fs::path& dir) {
  if (crashed()) fail(EIO, "list directory", dir);
  return base_.list_dir(dir);
}

FileInfo FaultInjectingEnv::stat(const fs::path& path) {
  if (crashed()) fail(EIO, "stat", path);
  return base_.stat(path);
}

std::unique_ptr<WritableFile> FaultInjectingEnv::open_write_direct(const fs::path& path) {
  if (const int e = state_->check(FaultOp::Open, path)) fail(e, "open (O_DIRECT)", path);
  auto base = base_.open_write_direct(path);
  if (base == nullptr) return nullptr;  // the base cannot (tmpfs): the caller writes buffered
  return std::make_unique<FaultWritableFile>(std::move(base), state_, true);
}

FileInfo FaultInjectingEnv::stat_target(const fs::path& path) {
  if (crashed()) fail(EIO, "stat", path);
  return base_.stat_target(path);
}

fs::path FaultInjectingEnv::real_path(const fs::path& path) {
  if (crashed()) fail(EIO, "resolve", path);
  return base_.real_path(path);
}

void FaultInjectingEnv::create_symlink(const fs::path& target, const fs::path& link) {
  if (const int e = state_->check(FaultOp::Symlink, link)) fail(e, "create symlink", link);
  base_.create_symlink(target, link);
}

fs::path FaultInjectingEnv::read_symlink(const fs::path& link) {
  if (crashed()) fail(EIO, "read symlink", link);
  return base_.read_symlink(link);
}

std::unique_ptr<FileLock> FaultInjectingEnv::lock_file(const fs::path& path, LockCreate create) {
  if (const int e = state_->check(FaultOp::Lock, path)) fail(e, "lock", path);
  return base_.lock_file(path, create);
}

}  // namespace ckptio::io
