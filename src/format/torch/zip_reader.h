// A strict reader for the zip archives torch.save writes: stored (uncompressed) records found
// through the central directory, zip64 when the archive needs it. Record bytes are handed out as
// spans of the caller's buffer (a memory map), never copied.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace ckptio::pt {

struct ZipEntry {
  std::string name;
  uint64_t data_offset = 0;  // absolute offset of the record's first byte
  uint64_t size = 0;
  uint32_t crc32 = 0;
  uint16_t method = 0;  // 0 stored; anything else is refused when the record is read
};

class ZipArchive {
 public:
  // Parses the end-of-central-directory record (zip64 if present), every central directory entry
  // and every entry's local header. Throws Error(Corrupt) for anything out of bounds, a local
  // header that disagrees with the central directory, duplicate names, names that are absolute
  // or contain "..", overlapping records; Error(Unsupported) for encrypted entries and multi-disk
  // archives. Compressed entries are listed (their stored extent is still checked). `source` names the file in messages.
  static ZipArchive parse(std::span<const std::byte> bytes, std::string_view source);

  const std::vector<ZipEntry>& entries() const { return entries_; }
  // nullptr when absent.
  const ZipEntry* find(std::string_view name) const;
  // The record's bytes inside the buffer given to parse(). Throws Error(Unsupported) for a
  // compressed record: torch.save never writes one, and inflating would let a small file expand.
  std::span<const std::byte> data(const ZipEntry& entry) const;
  // Throws Error(Corrupt) naming the entry when its bytes do not match the recorded CRC-32.
  void verify_crc(const ZipEntry& entry) const;

 private:
  std::span<const std::byte> bytes_;
  std::string source_;
  std::vector<ZipEntry> entries_;
  std::unordered_map<std::string, size_t> by_name_;
};

// True when the buffer starts with a zip local file header or end-of-central-directory record.
bool starts_like_zip(std::span<const std::byte> head);

}  // namespace ckptio::pt
