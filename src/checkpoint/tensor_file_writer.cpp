#include "checkpoint/tensor_file_writer.h"

#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <thread>

#include "checkpoint/file_hash.h"
#include "core/thread_start.h"
#include "ckptio/error.h"

namespace ckptio::checkpoint {

namespace fs = std::filesystem;

static std::span<const std::byte> as_bytes(std::string_view s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

WrittenFile write_text_file(io::Env& env, const fs::path& root, const std::string& rel,
                            std::string_view text, const WriteSettings& settings) {
  auto file = env.open_write(root / rel, io::OpenMode::CreateNew);
  file->write_at(0, as_bytes(text));
  if (settings.fsync) file->sync();
  file->close();
  WrittenFile out{rel, text.size(), {}};
  if (settings.checksums) out.xxh3_128 = xxh3_128_hex(text);
  return out;
}

namespace {

// Gathers small pieces into one buffer so that a thousand 4 KiB tensors cost a handful of writes;
// large pieces go straight from their own memory.
class CoalescingWriter {
 public:
  explicit CoalescingWriter(io::WritableFile& file) : file_(file) {}

  void append(std::span<const std::byte> piece) {
    if (piece.size() >= kDirectThreshold) {
      flush();
      file_.write_at(offset_, piece);
      offset_ += piece.size();
      return;
    }
    if (buffer_.size() + piece.size() > kBufferBytes) flush();
    if (buffer_.empty()) buffer_start_ = offset_;
    buffer_.insert(buffer_.end(), piece.begin(), piece.end());
    offset_ += piece.size();
  }

  void flush() {
    if (buffer_.empty()) return;
    file_.write_at(buffer_start_, buffer_);
    buffer_.clear();
  }

  uint64_t offset() const { return offset_; }

 private:
  static constexpr size_t kDirectThreshold = size_t{1} << 20;
  static constexpr size_t kBufferBytes = size_t{4} << 20;
  io::WritableFile& file_;
  std::vector<std::byte> buffer_;
  uint64_t buffer_start_ = 0;
  uint64_t offset_ = 0;
};

}  // namespace

WrittenFile write_safetensors_file(io::Env& env, const fs::path& root, const std::string& rel,
                                   std::span<const NamedTensor> tensors,
                                   const WriteSettings& settings) {
  const SafetensorsLayout layout = plan_safetensors(tensors);
  // The data section must be the tensors back to back in `order`, so that the pieces we write and
  // hash are exactly the file.
  uint64_t expected = 0;
  for (size_t i = 0; i < layout.order.size(); ++i) {
    const TensorInfo& e = layout.entries[i];
    if (e.begin != expected || e.nbytes() != tensors[layout.order[i]].view.bytes.size()) {
      throw Error(ErrorCode::Internal, "safetensors layout of '" + rel + "' is not packed");
    }
    expected = e.end;
  }
  if (layout.file_size != layout.header.size() + expected) {
    throw Error(ErrorCode::Internal, "safetensors layout of '" + rel + "' has a wrong size");
  }
  std::vector<std::span<const std::byte>> pieces;
  pieces.reserve(layout.order.size() + 1);
  pieces.push_back(as_bytes(layout.header));
  for (size_t index : layout.order) pieces.push_back(tensors[index].view.bytes);

  WrittenFile out{rel, layout.file_size, {}};
  // The checksum runs on another core over the same memory while this thread writes.
  auto hash = [&pieces, &out] {
    Xxh3Hasher hasher;
    for (const auto& piece : pieces) hasher.update(piece);
    out.xxh3_128 = hasher.hex();
  };
  std::thread hasher_thread;
  bool hash_here = false;
  if (settings.checksums) {
    try {
      hasher_thread = start_thread(hash, "a checksum thread");
    } catch (const Error&) {
      hash_here = true;  // no thread to be had: hash in this one after writing
    }
  }
  try {
    auto file = env.open_write(root / rel, io::OpenMode::CreateNew);
    CoalescingWriter writer(*file);
    for (const auto& piece : pieces) writer.append(piece);
    writer.flush();
    if (settings.fsync) file->sync();
    file->close();
  } catch (...) {
    if (hasher_thread.joinable()) hasher_thread.join();
    throw;
  }
  if (hasher_thread.joinable()) hasher_thread.join();
  if (hash_here) hash();
  return out;
}

std::vector<std::pair<size_t, size_t>> plan_shards(std::span<const NamedTensor> tensors,
                                                   uint64_t max_shard_bytes) {
  std::vector<std::pair<size_t, size_t>> shards;
  size_t begin = 0;
  uint64_t current = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const uint64_t n = tensors[i].view.bytes.size();
    if (i > begin && current + n > max_shard_bytes) {
      shards.emplace_back(begin, i);
      begin = i;
      current = 0;
    }
    current += n;
  }
  if (begin < tensors.size() || shards.empty()) shards.emplace_back(begin, tensors.size());
  return shards;
}

static std::string join_rel(const std::string& dir, const std::string& name) {
  return dir.empty() ? name : dir + "/" + name;
}

static void ensure_dir(io::Env& env, const fs::path& root, const std::string& dir,
                       std::vector<std::string>& dirs_written) {
  if (dir.empty()) return;
  for (const auto& d : dirs_written) {
    if (d == dir) return;
  }
  env.create_dirs(root / dir);
  dirs_written.push_back(dir);
}

std::vector<WrittenFile> write_tensor_set(io::Env& env, const fs::path& root,
                                          const std::string& single_dir,
                                          const std::string& sharded_dir, const std::string& base,
                                          std::span<const NamedTensor> tensors,
                                          uint64_t max_shard_bytes, const WriteSettings& settings,
                                          std::vector<std::string>& dirs_written) {
  std::vector<WrittenFile> written;
  const auto shards = plan_shards(tensors, max_shard_bytes);
  if (shards.size() == 1) {
    ensure_dir(env, root, single_dir, dirs_written);
    written.push_back(write_safetensors_file(
        env, root, join_rel(single_dir, base + ".safetensors"), tensors, settings));
    return written;
  }
  ensure_dir(env, root, sharded_dir, dirs_written);
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  uint64_t total = 0;
  for (size_t k = 0; k < shards.size(); ++k) {
    char name[64];
    std::snprintf(name, sizeof name, "-%05zu-of-%05zu.safetensors", k + 1, shards.size());
    const std::string file_name = base + name;
    const auto [b, e] = shards[k];
    const auto part = tensors.subspan(b, e - b);
    written.push_back(
        write_safetensors_file(env, root, join_rel(sharded_dir, file_name), part, settings));
    for (const auto& t : part) {
      weight_map[t.name] = file_name;
      total += t.view.bytes.size();
    }
  }
  nlohmann::ordered_json index = {{"metadata", {{"total_size", total}}},
                                  {"weight_map", std::move(weight_map)}};
  written.push_back(write_text_file(env, root,
                                    join_rel(sharded_dir, base + ".safetensors.index.json"),
                                    index.dump(2) + "\n", settings));
  return written;
}

}  // namespace ckptio::checkpoint
