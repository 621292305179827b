#include "inspect_dcp.h"

#include <fmt/core.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "ckptio/dcp.h"
#include "ckptio/error.h"

namespace ckptio::cli {

int inspect_dcp(const std::filesystem::path& dir, bool json) {
  const dcp::DcpReader reader = dcp::DcpReader::open(dir);
  const dcp::DcpMetadata& m = reader.metadata();
  uint64_t total = 0;
  nlohmann::ordered_json tensors = nlohmann::ordered_json::array();
  for (const auto& t : m.tensors) {
    const uint64_t nbytes = tensor_nbytes(t.dtype, t.shape);
    total += nbytes;
    nlohmann::ordered_json chunks = nlohmann::ordered_json::array();
    for (const auto& c : t.chunks) {
      chunks.push_back({{"offsets", c.offsets}, {"sizes", c.sizes}, {"file", c.item.file},
                        {"offset", c.item.offset}, {"length", c.item.length}});
    }
    tensors.push_back({{"name", t.name}, {"dtype", dtype_name(t.dtype)}, {"shape", t.shape},
                       {"nbytes", nbytes}, {"chunks", chunks}});
  }
  nlohmann::ordered_json values = nlohmann::ordered_json::array();
  for (const auto& b : m.bytes) {
    values.push_back({{"name", b.name}, {"file", b.item.file}, {"offset", b.item.offset},
                      {"length", b.item.length},
                      {"value", nlohmann::ordered_json::parse(pt::value_to_json(reader.read_value(b.name)))}});
  }
  if (json) {
    nlohmann::ordered_json doc = {{"format", "dcp"},       {"path", dir.string()},
                                  {"version", m.version},  {"tensors", tensors},
                                  {"values", values},      {"total_bytes", total}};
    std::cout << doc.dump(2) << "\n";
    return 0;
  }
  fmt::print("format: PyTorch DCP checkpoint ({}), version {}\n", printable(dir.string()),
             m.version.empty() ? "?" : printable(m.version));
  for (const auto& t : m.tensors) {
    fmt::print("  {}  {} {}  {} bytes, {} chunk{}\n", printable(t.name), dtype_name(t.dtype),
               shape_to_string(t.shape), tensor_nbytes(t.dtype, t.shape), t.chunks.size(),
               t.chunks.size() == 1 ? "" : "s");
    for (const auto& c : t.chunks) {
      fmt::print("      at {} size {}: {} bytes {}..{}\n", shape_to_string(c.offsets), shape_to_string(c.sizes),
                 printable(c.item.file), c.item.offset, c.item.offset + c.item.length);
    }
  }
  for (size_t i = 0; i < m.bytes.size(); ++i) {
    fmt::print("  {} = {}\n", printable(m.bytes[i].name), printable(values[i]["value"].dump()));
  }
  fmt::print("total: {} tensors, {} values, {} tensor bytes\n", m.tensors.size(), m.bytes.size(), total);
  return 0;
}

int verify_dcp(const std::filesystem::path& dir) {
  const dcp::DcpReader reader = dcp::DcpReader::open(dir);
  reader.verify();
  size_t chunks = 0;
  uint64_t total = 0;
  for (const auto& t : reader.metadata().tensors) {
    chunks += t.chunks.size();
    total += tensor_nbytes(t.dtype, t.shape);
  }
  fmt::print("{}: ok, PyTorch DCP checkpoint, {} tensors in {} chunks, {} values, {} tensor bytes; "
             "every item matches its metadata and every zip record's CRC-32 matches\n",
             printable(dir.string()), reader.metadata().tensors.size(), chunks,
             reader.metadata().bytes.size(), total);
  return 0;
}

}  // namespace ckptio::cli
