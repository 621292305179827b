#include "inspect_safetensors.h"

#include <fmt/core.h>

#include <nlohmann/json.hpp>

#include "ckptio/safetensors.h"
#include "source_kind.h"

namespace ckptio::cli {

int inspect_safetensors(const std::filesystem::path& path, bool json) {
  // Pread mode: inspect reads only the header, so there is nothing to map.
  const auto reader = SafetensorsReader::open(path, {.mode = ReadMode::Pread});
  const auto& h = reader.header();
  uint64_t total_bytes = 0;
  uint64_t total_elements = 0;
  for (const auto& t : h.tensors) {
    total_bytes += t.nbytes();
    total_elements += shape_numel(t.shape);
  }
  if (json) {
    nlohmann::ordered_json out;
    out["format"] = "safetensors";
    out["metadata"] = nlohmann::ordered_json::object();
    if (h.metadata) {
      for (const auto& [k, v] : *h.metadata) out["metadata"][k] = v;
    }
    out["tensors"] = nlohmann::ordered_json::array();
    for (const auto& t : h.tensors) {
      out["tensors"].push_back({{"name", t.name},
                                {"dtype", dtype_name(t.dtype)},
                                {"shape", t.shape},
                                {"nbytes", t.nbytes()},
                                {"data_offsets", {t.begin, t.end}}});
    }
    out["total_bytes"] = total_bytes;
    fmt::print("{}\n", out.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace));
    return 0;
  }
  fmt::print("file: {}\nformat: safetensors, header {} bytes, data {} bytes\n", printable(path.string()),
             h.header_bytes, h.data_bytes);
  if (h.metadata) {
    fmt::print("metadata ({} keys):\n", h.metadata->size());
    for (const auto& [k, v] : *h.metadata) fmt::print("  {}: {}\n", printable(k), printable(v));
  } else {
    fmt::print("metadata: none\n");
  }
  size_t name_width = 4;
  for (const auto& t : h.tensors) name_width = std::max(name_width, printable(t.name).size());
  name_width = std::min<size_t>(name_width, 60);
  fmt::print("tensors ({}):\n  {:<{}}  {:<11}  {:<20}  {:>14}  {}\n", h.tensors.size(), "name",
             name_width, "dtype", "shape", "bytes", "data_offsets");
  for (const auto& t : h.tensors) {
    fmt::print("  {:<{}}  {:<11}  {:<20}  {:>14}  [{}, {})\n", printable(t.name), name_width,
               dtype_name(t.dtype), shape_to_string(t.shape), t.nbytes(), t.begin, t.end);
  }
  fmt::print("total: {} tensors, {} elements, {} bytes\n", h.tensors.size(), total_elements,
             total_bytes);
  return 0;
}

int verify_safetensors(const std::filesystem::path& path) {
  // Opening validates the header, every offset and the exact file length; reading every tensor
  // then proves the bytes are readable (a truncated or unreadable file fails here).
  const auto reader = SafetensorsReader::open(path, {.mode = ReadMode::Pread});
  std::vector<std::byte> buf;
  for (const auto& t : reader.tensors()) {
    buf.resize(t.nbytes());
    reader.read_into(t.name, buf);
  }
  fmt::print("ok: {} is a valid safetensors file ({} tensors, {} bytes)\n", printable(path.string()),
             reader.tensors().size(), reader.file_size());
  return 0;
}

}  // namespace ckptio::cli
