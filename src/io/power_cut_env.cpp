// PowerCutEnv: the real folder is the volatile state (the page cache), the model is what a disk
// would hold after a power cut. Objects are identified by inode number, which follows a file or a
// folder through renames; an inode that is unlinked through the Env is forgotten, so a later file
// that reuses the number starts a new model node.
#include "ckptio/power_cut_env.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "ckptio/error.h"

namespace ckptio::io {
namespace {

enum class Kind : uint8_t { File, Dir, Symlink };

struct Node {
  Kind kind = Kind::File;
  // File: the bytes at its last sync (empty if never synced). Symlink: the target.
  std::string data;
  // Dir: the entries at its last sync_dir (empty if never synced).
  std::map<std::string, size_t> entries;
};

// What one path holds after the cut.
struct Image {
  Kind kind = Kind::File;
  std::string data;
  std::map<std::string, Image> children;
};

std::string quoted(const fs::path& p) { return "'" + p.string() + "'"; }

[[noreturn]] void power_is_out(std::string_view what, const fs::path& path) {
  throw system_error(EIO, std::string(what) + " " + quoted(path) + " (the power is out)");
}

std::string read_fd(int fd, const fs::path& path) {
  std::string out;
  char buf[1 << 16];
  uint64_t off = 0;
  for (;;) {
    const ssize_t n = ::pread(fd, buf, sizeof buf, static_cast<off_t>(off));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw system_error(errno, "power-cut model: read " + quoted(path));
    }
    if (n == 0) return out;
    out.append(buf, static_cast<size_t>(n));
    off += static_cast<uint64_t>(n);
  }
}

std::string read_path(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw system_error(errno, "power-cut model: open " + quoted(path));
  std::string s;
  try {
    s = read_fd(fd, path);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  return s;
}

std::string read_link(const fs::path& path) {
  std::error_code ec;
  const fs::path target = fs::read_symlink(path, ec);
  if (ec) throw system_error(ec.value(), "power-cut model: readlink " + quoted(path));
  return target.string();
}

void write_path(const fs::path& path, const std::string& data) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw system_error(errno, "power-cut model: create " + quoted(path));
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int e = errno;
      ::close(fd);
      throw system_error(e, "power-cut model: write " + quoted(path));
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
}

}  // namespace

struct PowerCutEnv::Model {
  std::mutex mu;
  fs::path root;
  std::deque<Node> nodes;  // a deque: references stay valid while nodes are added
  std::unordered_map<ino_t, size_t> live;  // inode on disk -> node
  size_t root_node = 0;
  bool cut = false;
  bool armed = false;
  bool exchange_supported = true;
  uint64_t left = 0;
  uint64_t ops = 0;

  // A mutating call: counts it, or cuts the power when its budget is spent.
  void gate(std::string_view what, const fs::path& path) {
    if (cut) power_is_out(what, path);
    if (armed) {
      if (left == 0) {
        cut = true;
        power_is_out(what, path);
      }
      --left;
    }
    ++ops;
  }
  void check_power(std::string_view what, const fs::path& path) const {
    if (cut) power_is_out(what, path);
  }
  // A call that only looks: refused once the power is out, not counted, and run outside the lock
  // (it changes nothing the model tracks).
  template <typename Call>
  auto looking(std::string_view what, const fs::path& path, Call&& call) {
    {
      std::lock_guard lock(mu);
      check_power(what, path);
    }
    return call();
  }

  static bool lstat_ino(const fs::path& path, struct stat& st) {
    return ::lstat(path.c_str(), &st) == 0;
  }

  size_t new_node(Kind kind, const fs::path& path) {
    Node n;
    n.kind = kind;
    if (kind == Kind::Symlink) n.data = read_link(path);
    nodes.push_back(std::move(n));
    return nodes.size() - 1;
  }

  static Kind kind_of(const struct stat& st) {
    if (S_ISDIR(st.st_mode)) return Kind::Dir;
    if (S_ISLNK(st.st_mode)) return Kind::Symlink;
    return Kind::File;
  }

  // The node of what `path` holds now; an inode seen for the first time (created outside the Env,
  // like a symlink) starts a node with nothing durable in it.
  std::optional<size_t> node_of(const fs::path& path) {
    struct stat st {};
    if (!lstat_ino(path, st)) return std::nullopt;
    auto it = live.find(st.st_ino);
    if (it != live.end() && nodes[it->second].kind == kind_of(st)) return it->second;
    const size_t id = new_node(kind_of(st), path);
    live[st.st_ino] = id;
    return id;
  }

  // `path` was just created: whatever its inode number meant before is gone.
  void fresh(const fs::path& path) {
    struct stat st {};
    if (!lstat_ino(path, st)) return;
    live[st.st_ino] = new_node(kind_of(st), path);
  }

  // `path` is about to be unlinked (with everything below it).
  void forget(const fs::path& path) {
    struct stat st {};
    if (!lstat_ino(path, st)) return;
    if (S_ISDIR(st.st_mode)) {
      std::error_code ec;
      for (const auto& e : fs::directory_iterator(path, ec)) forget(e.path());
    }
    if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) return;  // another name keeps it alive
    live.erase(st.st_ino);
  }

  void sync_file(int fd, const fs::path& path) {
    struct stat st {};
    std::string bytes;
    if (fd >= 0) {
      if (::fstat(fd, &st) != 0) throw system_error(errno, "power-cut model: stat " + quoted(path));
      // The descriptor is write-only; /proc reopens the same inode even after a rename.
      bytes = read_path("/proc/self/fd/" + std::to_string(fd));
    } else {
      if (!lstat_ino(path, st)) throw system_error(errno, "power-cut model: stat " + quoted(path));
      bytes = read_path(path);
    }
    auto it = live.find(st.st_ino);
    size_t id;
    if (it == live.end()) {
      id = new_node(Kind::File, path);
      live[st.st_ino] = id;
    } else {
      id = it->second;
    }
    nodes[id].data = std::move(bytes);
  }

  void sync_dir(const fs::path& dir) {
    const auto id = node_of(dir);
    if (!id) return;
    std::map<std::string, size_t> entries;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      const auto child = node_of(e.path());
      if (!child) continue;
      if (nodes[*child].kind == Kind::Symlink) nodes[*child].data = read_link(e.path());
      entries[e.path().filename().string()] = *child;
    }
    nodes[*id].entries = std::move(entries);
  }

  // Everything under `root` as it is now becomes the durable state.
  void adopt_all() {
    nodes.clear();
    live.clear();
    const auto id = node_of(root);
    if (!id || nodes[*id].kind != Kind::Dir) {
      throw Error(ErrorCode::InvalidArgument,
                  "power-cut model: " + quoted(root) + " is not a folder");
    }
    root_node = *id;
    adopt(root);
  }
  void adopt(const fs::path& dir) {
    sync_dir(dir);
    for (const auto& [name, child] : nodes[*node_of(dir)].entries) {
      const fs::path p = dir / name;
      if (nodes[child].kind == Kind::Dir) {
        adopt(p);
      } else if (nodes[child].kind == Kind::File) {
        nodes[child].data = read_path(p);
      }
    }
  }

  // The durable image, entries as of the last sync_dir of each folder.
  void image_from_model(size_t id, Image& out, std::set<size_t>& on_path) {
    out.kind = nodes[id].kind;
    out.data = nodes[id].data;
    if (out.kind != Kind::Dir) return;
    on_path.insert(id);
    for (const auto& [name, child] : nodes[id].entries) {
      if (on_path.count(child)) continue;  // a folder cannot contain itself
      image_from_model(child, out.children[name], on_path);
    }
    on_path.erase(id);
  }

  // The durable image with every entry as it is now, file bytes as of their last sync.
  void image_from_disk(const fs::path& dir, Image& out) {
    out.kind = Kind::Dir;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      const auto id = node_of(e.path());
      if (!id) continue;
      Image& child = out.children[e.path().filename().string()];
      child.kind = nodes[*id].kind;
      if (child.kind == Kind::Dir) {
        image_from_disk(e.path(), child);
      } else if (child.kind == Kind::Symlink) {
        child.data = read_link(e.path());
      } else {
        child.data = nodes[*id].data;
      }
    }
  }

  // TornPrefix: where each live file node is now, to read its current bytes.
  void current_paths(const fs::path& dir, std::map<size_t, fs::path>& out) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      const auto id = node_of(e.path());
      if (!id) continue;
      if (nodes[*id].kind == Kind::Dir) {
        current_paths(e.path(), out);
      } else if (nodes[*id].kind == Kind::File) {
        out.emplace(*id, e.path());
      }
    }
  }

  void tear(Image& img, const std::map<size_t, fs::path>& paths, std::mt19937_64& rng,
            const std::map<const Image*, size_t>& ids) {
    if (img.kind == Kind::File) {
      auto id = ids.find(&img);
      if (id == ids.end()) return;
      auto p = paths.find(id->second);
      if (p == paths.end()) return;
      const std::string now = read_path(p->second);
      if (now == img.data) return;
      const size_t keep = static_cast<size_t>(rng() % (now.size() + 1));
      std::string torn = now.substr(0, keep);
      if (img.data.size() > keep) torn += img.data.substr(keep);
      img.data = std::move(torn);
      return;
    }
    for (auto& [name, child] : img.children) tear(child, paths, rng, ids);
  }

  static void write_image(const fs::path& dir, const Image& img) {
    for (const auto& [name, child] : img.children) {
      const fs::path p = dir / name;
      switch (child.kind) {
        case Kind::Dir:
          fs::create_directory(p);
          write_image(p, child);
          break;
        case Kind::Symlink:
          fs::create_symlink(child.data, p);
          break;
        case Kind::File:
          write_path(p, child.data);
          break;
      }
    }
  }
};

namespace {

class PowerCutWritableFile final : public WritableFile {
 public:
  PowerCutWritableFile(std::unique_ptr<WritableFile> base,
                       std::shared_ptr<PowerCutEnv::Model> model)
      : base_(std::move(base)), model_(std::move(model)) {}
  const fs::path& path() const override { return base_->path(); }

  void write_at(uint64_t offset, std::span<const std::byte> src) override {
    std::lock_guard lock(model_->mu);
    model_->gate("write", path());
    base_->write_at(offset, src);
  }
  void truncate(uint64_t size) override {
    std::lock_guard lock(model_->mu);
    model_->gate("truncate", path());
    base_->truncate(size);
  }
  void sync() override {
    std::lock_guard lock(model_->mu);
    model_->gate("fsync", path());
    model_->sync_file(base_->fd(), path());
  }
  void close() override {
    std::lock_guard lock(model_->mu);
    try {
      model_->gate("close", path());
    } catch (...) {
      try {
        base_->close();  // the descriptor goes either way, like close(2)
      } catch (...) {
      }
      throw;
    }
    base_->close();
  }
  // Engines (io_uring, O_DIRECT) write to the real descriptor; each write is gated like
  // write_at, so the model counts it and a cut stops it. The bytes need no copy into the model:
  // sync() reads the file back, so what an engine wrote is durable exactly when write_at's is.
  int fd() const override { return base_->fd(); }
  WritePlan plan_write(uint64_t, size_t len, bool first) override {
    std::lock_guard lock(model_->mu);
    try {
      if (first) {
        model_->gate("write", path());
      } else {
        model_->check_power("write", path());
      }
    } catch (const Error&) {
      return {0, EIO};
    }
    return {len, 0};
  }

 private:
  std::unique_ptr<WritableFile> base_;
  std::shared_ptr<PowerCutEnv::Model> model_;
};

}  // namespace

PowerCutEnv::PowerCutEnv(fs::path root, Env& base)
    : base_(base), model_(std::make_shared<Model>()) {
  if (!root.is_absolute()) {
    throw Error(ErrorCode::InvalidArgument,
                "power-cut model: root " + quoted(root) + " must be an absolute path");
  }
  model_->root = root.lexically_normal();
  if (model_->root.filename().empty()) model_->root = model_->root.parent_path();
  std::lock_guard lock(model_->mu);
  model_->adopt_all();
}

PowerCutEnv::~PowerCutEnv() = default;

const fs::path& PowerCutEnv::root() const { return model_->root; }

void PowerCutEnv::cut_after(uint64_t ops) {
  std::lock_guard lock(model_->mu);
  model_->armed = true;
  model_->left = ops;
}

void PowerCutEnv::set_exchange_supported(bool supported) {
  std::lock_guard lock(model_->mu);
  model_->exchange_supported = supported;
}

bool PowerCutEnv::is_cut() const {
  std::lock_guard lock(model_->mu);
  return model_->cut;
}

uint64_t PowerCutEnv::ops() const {
  std::lock_guard lock(model_->mu);
  return model_->ops;
}

void PowerCutEnv::power_cut(const PowerCutOptions& options) {
  Model& m = *model_;
  std::lock_guard lock(m.mu);
  m.cut = true;
  Image image;
  std::map<const Image*, size_t> ids;  // TornPrefix: image file -> node
  if (options.names == PowerCutOptions::Names::Rollback) {
    std::set<size_t> on_path;
    m.image_from_model(m.root_node, image, on_path);
    if (options.data == PowerCutOptions::Data::TornPrefix) {
      // Pair image files with their nodes by walking both trees the same way.
      std::function<void(size_t, const Image&, std::set<size_t>&)> pair =
          [&](size_t id, const Image& img, std::set<size_t>& seen) {
            if (img.kind == Kind::File) ids[&img] = id;
            if (img.kind != Kind::Dir) return;
            seen.insert(id);
            for (const auto& [name, child] : img.children) {
              auto e = m.nodes[id].entries.find(name);
              if (e != m.nodes[id].entries.end() && !seen.count(e->second)) {
                pair(e->second, child, seen);
              }
            }
            seen.erase(id);
          };
      std::set<size_t> seen;
      pair(m.root_node, image, seen);
    }
  } else {
    m.image_from_disk(m.root, image);
    if (options.data == PowerCutOptions::Data::TornPrefix) {
      std::function<void(const fs::path&, const Image&)> pair = [&](const fs::path& dir,
                                                                    const Image& img) {
        for (const auto& [name, child] : img.children) {
          const auto id = m.node_of(dir / name);
          if (!id) continue;
          if (child.kind == Kind::File) ids[&child] = *id;
          if (child.kind == Kind::Dir) pair(dir / name, child);
        }
      };
      pair(m.root, image);
    }
  }
  if (options.data == PowerCutOptions::Data::TornPrefix) {
    std::map<size_t, fs::path> paths;
    m.current_paths(m.root, paths);
    std::mt19937_64 rng(options.seed);
    m.tear(image, paths, rng, ids);
  }

  for (const auto& e : fs::directory_iterator(m.root)) fs::remove_all(e.path());
  Model::write_image(m.root, image);
  m.adopt_all();
  m.cut = false;
  m.armed = false;
  m.left = 0;
  m.ops = 0;
}

std::unique_ptr<ReadableFile> PowerCutEnv::open_read(const fs::path& path) {
  return model_->looking("open", path, [&] { return base_.open_read(path); });
}

std::shared_ptr<const MappedFile> PowerCutEnv::map_read(const fs::path& path) {
  return model_->looking("mmap", path, [&] { return base_.map_read(path); });
}

std::unique_ptr<WritableFile> PowerCutEnv::open_write(const fs::path& path, OpenMode mode) {
  std::lock_guard lock(model_->mu);
  model_->gate("create", path);
  struct stat st {};
  const bool existed = ::lstat(path.c_str(), &st) == 0;
  auto file = base_.open_write(path, mode);
  if (!existed) model_->fresh(path);
  return std::make_unique<PowerCutWritableFile>(std::move(file), model_);
}

void PowerCutEnv::rename(const fs::path& from, const fs::path& to) {
  std::lock_guard lock(model_->mu);
  model_->gate("rename", to);
  struct stat a {}, b {};
  const bool replaces = ::lstat(from.c_str(), &a) == 0 && ::lstat(to.c_str(), &b) == 0 &&
                        a.st_ino != b.st_ino;
  model_->node_of(from);  // a symlink made outside the Env is adopted before it moves
  base_.rename(from, to);
  if (replaces) {
    // The replaced inode is gone (rename(2) unlinked it), unless it still has another name.
    if (S_ISDIR(b.st_mode) || b.st_nlink <= 1) model_->live.erase(b.st_ino);
  }
}

void PowerCutEnv::exchange(const fs::path& a, const fs::path& b) {
  std::lock_guard lock(model_->mu);
  if (!model_->exchange_supported) {
    model_->check_power("exchange", b);
    throw Error(ErrorCode::Unsupported, "atomic exchange of " + quoted(a) + " and " + quoted(b) +
                                            " is not supported here (power-cut model)");
  }
  model_->gate("exchange", b);
  model_->node_of(a);
  model_->node_of(b);
  base_.exchange(a, b);
}

void PowerCutEnv::sync_dir(const fs::path& dir) {
  std::lock_guard lock(model_->mu);
  model_->gate("fsync directory", dir);
  model_->sync_dir(dir.empty() ? fs::path(".") : dir);
}

void PowerCutEnv::remove(const fs::path& path) {
  std::lock_guard lock(model_->mu);
  model_->gate("remove", path);
  struct stat st {};
  const bool existed = ::lstat(path.c_str(), &st) == 0;
  base_.remove(path);
  if (existed && (S_ISDIR(st.st_mode) || st.st_nlink <= 1)) model_->live.erase(st.st_ino);
}

void PowerCutEnv::remove_all(const fs::path& path) {
  std::lock_guard lock(model_->mu);
  model_->gate("remove", path);
  model_->forget(path);
  base_.remove_all(path);
}

void PowerCutEnv::create_dirs(const fs::path& path) {
  std::lock_guard lock(model_->mu);
  model_->gate("create directory", path);
  // The components that do not exist yet are new folders.
  std::vector<fs::path> missing;
  for (fs::path p = path.lexically_normal(); !p.empty() && p != p.parent_path();
       p = p.parent_path()) {
    if (p.filename().empty()) continue;
    struct stat st {};
    if (::lstat(p.c_str(), &st) == 0) break;
    missing.push_back(p);
  }
  base_.create_dirs(path);
  for (const auto& p : missing) model_->fresh(p);
}

std::vector<std::string> PowerCutEnv::list_dir(const fs::path& dir) {
  return model_->looking("list directory", dir, [&] { return base_.list_dir(dir); });
}

FileInfo PowerCutEnv::stat(const fs::path& path) {
  return model_->looking("stat", path, [&] { return base_.stat(path); });
}

std::unique_ptr<WritableFile> PowerCutEnv::open_write_direct(const fs::path& path) {
  std::lock_guard lock(model_->mu);
  model_->gate("open (O_DIRECT)", path);
  auto file = base_.open_write_direct(path);  // an existing file: nothing new to model
  if (file == nullptr) return nullptr;
  return std::make_unique<PowerCutWritableFile>(std::move(file), model_);
}

FileInfo PowerCutEnv::stat_target(const fs::path& path) {
  return model_->looking("stat", path, [&] { return base_.stat_target(path); });
}

fs::path PowerCutEnv::real_path(const fs::path& path) {
  return model_->looking("resolve", path, [&] { return base_.real_path(path); });
}

void PowerCutEnv::create_symlink(const fs::path& target, const fs::path& link) {
  std::lock_guard lock(model_->mu);
  model_->gate("create symlink", link);
  base_.create_symlink(target, link);
  // A new entry like a file: it survives only once its folder is synced.
  model_->fresh(link);
}

fs::path PowerCutEnv::read_symlink(const fs::path& link) {
  return model_->looking("read symlink", link, [&] { return base_.read_symlink(link); });
}

std::unique_ptr<FileLock> PowerCutEnv::lock_file(const fs::path& path, LockCreate create) {
  std::lock_guard lock(model_->mu);
  model_->check_power("lock", path);
  // Locks are not data: taking one is not a counted operation. A lock file it creates is a new
  // entry like any other (kept only if its folder is synced), which the model must know.
  struct stat st {};
  const bool existed = ::lstat(path.c_str(), &st) == 0;
  auto held = base_.lock_file(path, create);
  if (!existed) {
    for (fs::path p = path; !p.empty() && p != model_->root && p != p.parent_path();
         p = p.parent_path()) {
      struct stat pst {};
      if (::lstat(p.c_str(), &pst) == 0 && model_->live.count(pst.st_ino)) break;
      model_->fresh(p);
    }
  }
  return held;
}

}  // namespace ckptio::io
