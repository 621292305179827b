#include "format/torch/zip_reader.h"

#include <algorithm>
#include <cstring>

#include "ckptio/error.h"
#include "format/torch/zip_crc32.h"

namespace ckptio::pt {

namespace {

constexpr uint32_t kLocalHeaderSig = 0x04034b50;
constexpr uint32_t kCentralHeaderSig = 0x02014b50;
constexpr uint32_t kEndSig = 0x06054b50;
constexpr uint32_t kZip64EndSig = 0x06064b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr size_t kEndSize = 22;
constexpr size_t kZip64LocatorSize = 20;
constexpr size_t kZip64EndSize = 56;
constexpr size_t kCentralSize = 46;
constexpr size_t kLocalSize = 30;
constexpr size_t kMaxComment = 0xffff;

// Bounds-checked little-endian reads over the whole archive.
class Cursor {
 public:
  Cursor(std::span<const std::byte> bytes, const std::string& source)
      : bytes_(bytes), source_(source) {}

  void need(uint64_t offset, uint64_t n, std::string_view what) const {
    if (offset > bytes_.size() || n > bytes_.size() - offset) {
      throw Error(ErrorCode::Corrupt, source_ + ": zip " + std::string(what) + " at byte " +
                                          std::to_string(offset) + " runs past the end of the " +
                                          std::to_string(bytes_.size()) + "-byte file");
    }
  }
  uint64_t le(uint64_t offset, int n) const {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(bytes_[offset + i]);
    return v;
  }
  uint16_t u16(uint64_t o) const { return static_cast<uint16_t>(le(o, 2)); }
  uint32_t u32(uint64_t o) const { return static_cast<uint32_t>(le(o, 4)); }
  uint64_t u64(uint64_t o) const { return le(o, 8); }
  std::string_view text(uint64_t o, size_t n) const {
    return {reinterpret_cast<const char*>(bytes_.data()) + o, n};
  }
  uint64_t size() const { return bytes_.size(); }

 private:
  std::span<const std::byte> bytes_;
  const std::string& source_;
};

[[noreturn]] void corrupt(const std::string& source, const std::string& msg) {
  throw Error(ErrorCode::Corrupt, source + ": " + msg);
}

bool unsafe_name(std::string_view name) {
  if (name.empty() || name.front() == '/' || name.find('\\') != std::string_view::npos ||
      name.find('\0') != std::string_view::npos) {
    return true;
  }
  size_t start = 0;
  while (start <= name.size()) {
    size_t end = name.find('/', start);
    if (end == std::string_view::npos) end = name.size();
    if (name.substr(start, end - start) == "..") return true;
    start = end + 1;
  }
  return false;
}

}  // namespace

bool starts_like_zip(std::span<const std::byte> head) {
  if (head.size() < 4) return false;
  uint32_t sig = 0;
  for (int i = 3; i >= 0; --i) sig = (sig << 8) | static_cast<uint8_t>(head[i]);
  return sig == kLocalHeaderSig || sig == kEndSig;
}

ZipArchive ZipArchive::parse(std::span<const std::byte> bytes, std::string_view source_view) {
  ZipArchive zip;
  zip.bytes_ = bytes;
  zip.source_ = std::string(source_view);
  const std::string& source = zip.source_;
  Cursor c(bytes, source);

  // The end record is the last 22 bytes plus an optional comment; search backwards for it.
  if (bytes.size() < kEndSize) corrupt(source, "too small to be a zip archive (no end record)");
  uint64_t end = 0;
  bool found = false;
  const uint64_t lowest = bytes.size() > kEndSize + kMaxComment ? bytes.size() - kEndSize - kMaxComment : 0;
  for (uint64_t pos = bytes.size() - kEndSize + 1; pos-- > lowest;) {
    if (c.u32(pos) == kEndSig && pos + kEndSize + c.u16(pos + 20) == bytes.size()) {
      end = pos;
      found = true;
      break;
    }
  }
  if (!found) {
    corrupt(source, "no zip end-of-central-directory record (truncated or not a zip archive)");
  }
  uint64_t disk = c.u16(end + 4), cd_disk = c.u16(end + 6);
  uint64_t count = c.u16(end + 10), disk_count = c.u16(end + 8);
  uint64_t cd_size = c.u32(end + 12), cd_offset = c.u32(end + 16);

  if (end >= kZip64LocatorSize && c.u32(end - kZip64LocatorSize) == kZip64LocatorSig) {
    const uint64_t loc = end - kZip64LocatorSize;
    const uint64_t z64 = c.u64(loc + 8);
    c.need(z64, kZip64EndSize, "zip64 end record");
    if (c.u32(z64) != kZip64EndSig) corrupt(source, "zip64 locator points at no zip64 end record");
    if (z64 + kZip64EndSize > loc) corrupt(source, "zip64 end record overlaps its locator");
    disk = c.u32(z64 + 16);
    cd_disk = c.u32(z64 + 20);
    disk_count = c.u64(z64 + 24);
    count = c.u64(z64 + 32);
    cd_size = c.u64(z64 + 40);
    cd_offset = c.u64(z64 + 48);
    end = z64;
  }
  if (disk != 0 || cd_disk != 0 || disk_count != count) {
    throw Error(ErrorCode::Unsupported, source + ": multi-disk zip archives are not supported");
  }
  c.need(cd_offset, cd_size, "central directory");
  if (cd_offset + cd_size > end) corrupt(source, "central directory overlaps the end record");
  // Each entry takes at least 46 bytes, so the count cannot make us reserve unbounded memory.
  if (count > cd_size / kCentralSize) {
    corrupt(source, "central directory claims " + std::to_string(count) +
                        " entries in " + std::to_string(cd_size) + " bytes");
  }
  zip.entries_.reserve(count);

  struct Span {
    uint64_t begin, end;
    size_t entry;
  };
  std::vector<Span> spans;
  spans.reserve(count);
  uint64_t pos = cd_offset;
  for (uint64_t i = 0; i < count; ++i) {
    c.need(pos, kCentralSize, "central directory entry");
    if (pos + kCentralSize > cd_offset + cd_size || c.u32(pos) != kCentralHeaderSig) {
      corrupt(source, "bad central directory entry " + std::to_string(i) + " at byte " +
                          std::to_string(pos));
    }
    const uint16_t flags = c.u16(pos + 8);
    const uint16_t method = c.u16(pos + 10);
    const uint32_t crc = c.u32(pos + 16);
    uint64_t comp_size = c.u32(pos + 20);
    uint64_t size = c.u32(pos + 24);
    const uint16_t name_len = c.u16(pos + 28);
    const uint16_t extra_len = c.u16(pos + 30);
    const uint16_t comment_len = c.u16(pos + 32);
    const uint16_t entry_disk = c.u16(pos + 34);
    uint64_t local = c.u32(pos + 42);
    const uint64_t var = pos + kCentralSize;
    const uint64_t next = var + name_len + extra_len + comment_len;
    if (next > cd_offset + cd_size) {
      corrupt(source, "central directory entry " + std::to_string(i) + " runs past the directory");
    }
    std::string name(c.text(var, name_len));
    // zip64 extra field: the 64-bit values appear only for fields saturated at 0xffffffff.
    for (uint64_t x = var + name_len; x + 4 <= var + name_len + extra_len;) {
      const uint16_t id = c.u16(x), len = c.u16(x + 2);
      if (x + 4 + len > var + name_len + extra_len) {
        corrupt(source, "extra field of zip entry '" + name + "' runs past its header");
      }
      if (id == 0x0001) {
        uint64_t f = x + 4;
        auto take = [&](uint64_t& field) {
          if (field != 0xffffffffu) return;
          if (f + 8 > x + 4 + len) corrupt(source, "short zip64 extra field in '" + name + "'");
          field = c.u64(f);
          f += 8;
        };
        take(size);
        take(comp_size);
        take(local);
      }
      x += 4 + len;
    }
    if (unsafe_name(name)) {
      corrupt(source, "zip entry name '" + name + "' is empty, absolute or contains '..'");
    }
    if (entry_disk != 0) {
      throw Error(ErrorCode::Unsupported, source + ": multi-disk zip archives are not supported");
    }
    if (flags & 0x1) {
      throw Error(ErrorCode::Unsupported, source + ": zip entry '" + name + "' is encrypted");
    }
    if (method == 0 && comp_size != size) {
      corrupt(source, "stored zip entry '" + name + "' has compressed size " +
                          std::to_string(comp_size) + " != size " + std::to_string(size));
    }
    // The local header must agree on the name; its extra field decides where data starts.
    c.need(local, kLocalSize, "local header of '" + name + "'");
    if (c.u32(local) != kLocalHeaderSig) {
      corrupt(source, "zip entry '" + name + "': no local header at byte " + std::to_string(local));
    }
    const uint16_t local_name_len = c.u16(local + 26);
    const uint16_t local_extra_len = c.u16(local + 28);
    c.need(local + kLocalSize, uint64_t{local_name_len} + local_extra_len, "local header");
    if (c.text(local + kLocalSize, local_name_len) != name) {
      corrupt(source, "zip entry '" + name + "': local header names '" +
                          std::string(c.text(local + kLocalSize, local_name_len)) + "'");
    }
    if (c.u16(local + 8) != method) {
      corrupt(source, "zip entry '" + name + "': local header disagrees on the method");
    }
    const uint64_t data = local + kLocalSize + local_name_len + local_extra_len;
    size = comp_size;  // the extent in the file; data() refuses anything but stored records
    c.need(data, size, "data of '" + name + "'");
    if (data + size > cd_offset) {
      corrupt(source, "zip entry '" + name + "' overlaps the central directory");
    }
    if (zip.by_name_.count(name)) corrupt(source, "zip entry '" + name + "' appears twice");
    zip.by_name_.emplace(name, zip.entries_.size());
    spans.push_back(Span{local, data + size, zip.entries_.size()});
    zip.entries_.push_back(ZipEntry{std::move(name), data, size, crc, method});
    pos = next;
  }
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < spans.size(); ++i) {
    if (spans[i].begin < spans[i - 1].end) {
      corrupt(source, "zip entries '" + zip.entries_[spans[i - 1].entry].name + "' and '" +
                          zip.entries_[spans[i].entry].name + "' overlap");
    }
  }
  return zip;
}

const ZipEntry* ZipArchive::find(std::string_view name) const {
  const auto it = by_name_.find(std::string(name));
  return it == by_name_.end() ? nullptr : &entries_[it->second];
}

std::span<const std::byte> ZipArchive::data(const ZipEntry& entry) const {
  if (entry.method != 0) {
    throw Error(ErrorCode::Unsupported,
                source_ + ": zip entry '" + entry.name + "' is compressed (method " +
                    std::to_string(entry.method) +
                    "); torch.save writes stored records, ckptio reads only those");
  }
  return bytes_.subspan(entry.data_offset, entry.size);
}

void ZipArchive::verify_crc(const ZipEntry& entry) const {
  const auto bytes = data(entry);
  const uint32_t crc = zip_crc32(0, bytes);
  if (crc != entry.crc32) {
    throw Error(ErrorCode::Corrupt, source_ + ": zip record '" + entry.name +
                                        "' (bytes " + std::to_string(entry.data_offset) + ".." +
                                        std::to_string(entry.data_offset + entry.size) +
                                        ") fails its CRC-32 check");
  }
}

}  // namespace ckptio::pt
