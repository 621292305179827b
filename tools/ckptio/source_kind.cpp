#include "source_kind.h"

#include <array>
#include <cstdio>
#include <fstream>
#include <string>

namespace ckptio::cli {

SourceKind detect_source_kind(const std::filesystem::path& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) return SourceKind::Missing;
  if (std::filesystem::is_directory(status)) return SourceKind::Directory;
  std::array<unsigned char, 512> head{};
  std::ifstream in(path, std::ios::binary);
  in.read(reinterpret_cast<char*>(head.data()), head.size());
  const auto n = static_cast<size_t>(in.gcount());
  if (n >= 4 && head[0] == 'P' && head[1] == 'K' && head[2] == 3 && head[3] == 4) {
    return SourceKind::TorchZip;
  }
  if (n >= 2 && head[0] == 0x80 && head[1] >= 2 && head[1] <= 5) return SourceKind::TorchLegacy;
  if (n >= 262 && std::string_view(reinterpret_cast<const char*>(head.data()) + 257, 5) == "ustar") {
    return SourceKind::TorchTar;
  }
  return SourceKind::Safetensors;
}

std::string_view source_kind_name(SourceKind kind) {
  switch (kind) {
    case SourceKind::Safetensors: return "safetensors";
    case SourceKind::TorchZip: return "torch-zip";
    case SourceKind::TorchLegacy: return "torch-legacy";
    case SourceKind::TorchTar: return "torch-tar";
    case SourceKind::Directory: return "directory";
    case SourceKind::Missing: return "missing";
  }
  return "unknown";
}

std::string printable(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

}  // namespace ckptio::cli
