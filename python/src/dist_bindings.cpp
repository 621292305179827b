// ckptio._core's distributed checkpoints: the C++ side of ckptio.dist. Kept thin: items cross as
// (name, dtype, global shape, placement, offsets, local shape, flat begin, flat length, raw) and
// the collectives cross back into Python through PyCommunicator, so the Python package decides
// which engine (torch.distributed, ...) carries them.
//
// GIL: save and load release it for the whole C++ call; each collective re-acquires it to call
// Python and releases it again before returning to the core.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <vector>

#include "bindings.h"
#include "checkpoint/staging_pool.h"
#include "ckptio/communicator.h"
#include "ckptio/dcp.h"
#include "ckptio/dist.h"
#include "ckptio/error.h"
#include "tensor_bridge.h"
#include "value_bridge.h"

namespace nb = nanobind;

namespace ckptio::python {

namespace {

// A Communicator whose collectives call a Python object with the methods rank(), size(),
// all_gather(bytes) -> list[bytes], broadcast(bytes, root) -> bytes, barrier(), and the attribute
// timeout_ms. gather is an all_gather whose result only the root keeps: the metadata gathered is
// small, and one Python method less keeps the engine adapters simple.
//
// A Python exception becomes an Error: Timeout when the exception says the collective timed out
// (gloo and NCCL raise RuntimeError/DistBackendError "... timed out ..."), else IoError naming the
// collective and the exception. After a failure the communicator is broken, as the contract in
// communicator.h requires.
class PyCommunicator final : public dist::Communicator {
 public:
  explicit PyCommunicator(nb::object impl) : impl_(std::move(impl)) {
    rank_ = nb::cast<int>(impl_.attr("rank")());
    size_ = nb::cast<int>(impl_.attr("size")());
    timeout_ = std::chrono::milliseconds(nb::cast<int64_t>(impl_.attr("timeout_ms")));
  }
  ~PyCommunicator() override {
    nb::gil_scoped_acquire gil;
    impl_.reset();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::chrono::milliseconds timeout() const override { return timeout_; }

  std::vector<std::string> all_gather(std::string_view mine) override {
    return call("all_gather", [&] {
      nb::object out = impl_.attr("all_gather")(nb::bytes(mine.data(), mine.size()));
      return to_strings(out);
    });
  }
  std::vector<std::string> gather(std::string_view mine, int root) override {
    std::vector<std::string> all = all_gather(mine);
    if (rank_ != root) return {};
    return all;
  }
  std::string broadcast(std::string_view bytes, int root) override {
    return call("broadcast", [&] {
      nb::object out = impl_.attr("broadcast")(nb::bytes(bytes.data(), bytes.size()), root);
      nb::bytes b = nb::cast<nb::bytes>(out);
      return std::string(static_cast<const char*>(b.data()), b.size());
    });
  }
  void barrier() override {
    call("barrier", [&] {
      impl_.attr("barrier")();
      return 0;
    });
  }

 private:
  static std::vector<std::string> to_strings(const nb::object& list) {
    std::vector<std::string> out;
    for (nb::handle h : list) {
      nb::bytes b = nb::cast<nb::bytes>(h);
      out.emplace_back(static_cast<const char*>(b.data()), b.size());
    }
    return out;
  }

  template <typename F>
  std::invoke_result_t<F&> call(const char* what, F&& f) {
    if (broken_) {
      throw Error(ErrorCode::IoError, std::string("communicator: ") + what +
                                          ": the group failed in an earlier collective");
    }
    std::string message;
    bool timed_out = false;
    {
      nb::gil_scoped_acquire gil;
      try {
        return f();
      } catch (nb::python_error& e) {
        // str(exception), not what(): what() carries the whole Python traceback.
        message = nb::str(e.value()).c_str();
        nb::object timeout_cls = nb::module_::import_("ckptio.errors").attr("TimeoutError");
        timed_out = e.matches(timeout_cls) || message.find("imed out") != std::string::npos ||
                    message.find("imeout") != std::string::npos;
      } catch (const std::exception& e) {
        message = e.what();
      }
    }
    broken_ = true;
    throw Error(timed_out ? ErrorCode::Timeout : ErrorCode::IoError,
                std::string("rank ") + std::to_string(rank_) + ": collective " + what +
                    " failed: " + message);
  }

  nb::object impl_;
  int rank_ = 0;
  int size_ = 1;
  std::chrono::milliseconds timeout_{0};
  bool broken_ = false;
};

// (name, dtype, global shape, placement "replicated"|"block"|"flat", offsets, local shape,
//  flat begin, flat length)
using SpecIn = std::tuple<std::string, std::string, Shape, std::string, std::vector<int64_t>,
                          Shape, uint64_t, uint64_t>;

dist::ShardedTensor sharded(const SpecIn& spec) {
  const auto& [name, dtype_text, global, placement, offsets, local, begin, length] = spec;
  std::optional<DType> dtype = parse_dtype(dtype_text);
  if (!dtype) {
    throw Error(ErrorCode::InvalidArgument,
                "tensor '" + name + "': unknown safetensors dtype '" + dtype_text + "'");
  }
  if (placement == "replicated") return dist::ShardedTensor::replicated(name, *dtype, global);
  if (placement == "block") return dist::ShardedTensor::block(name, *dtype, global, offsets, local);
  if (placement == "flat") return dist::ShardedTensor::flat(name, *dtype, global, begin, length);
  throw Error(ErrorCode::InvalidArgument,
              "tensor '" + name + "': unknown placement '" + placement + "'");
}

nb::dict dist_save(nb::object comm_impl, const std::string& dir,
                   const std::vector<std::tuple<SpecIn, RawIn>>& items, bool replace, bool sync,
                   int64_t epoch, int64_t global_step) {
  PyCommunicator comm(std::move(comm_impl));
  std::vector<dist::SaveItem> save_items;
  save_items.reserve(items.size());
  for (const auto& [spec, raw] : items) {
    save_items.push_back(dist::SaveItem{
        sharded(spec), std::span<const std::byte>(reinterpret_cast<const std::byte*>(raw.data()),
                                                  static_cast<size_t>(raw.size()))});
  }
  dist::SaveOptions options;
  options.replace = replace;
  options.sync = sync;
  options.epoch = epoch;
  options.global_step = global_step;
  dist::SaveResult result;
  {
    nb::gil_scoped_release release;
    result = dist::save(comm, dir, save_items, options);
  }
  nb::dict out;
  out["path"] = result.path.string();
  nb::list files;
  for (const auto& f : result.files) files.append(f);
  out["files"] = files;
  out["bytes_written"] = result.bytes_written;
  return out;
}

// [(name, dtype, shape)] of the tensors an index or metadata lists.
template <typename Tensors>
nb::list tensor_list(const Tensors& tensors) {
  nb::list out;
  for (const auto& t : tensors) {
    out.append(nb::make_tuple(t.name, std::string(dtype_name(t.dtype)), shape_list(t.shape)));
  }
  return out;
}

class PyDistReader {
 public:
  explicit PyDistReader(const std::string& dir) : reader_(open(dir)) {}

  // [(name, dtype, shape)] of every tensor in the index.
  nb::list tensors() const { return tensor_list(reader_.index().tensors); }
  int world_size() const { return reader_.index().world_size; }

  uint64_t read(const std::vector<std::tuple<SpecIn, RawInOut>>& items, unsigned threads) const {
    std::vector<dist::LoadItem> load_items;
    load_items.reserve(items.size());
    for (const auto& [spec, raw] : items) {
      load_items.push_back(dist::LoadItem{
          sharded(spec), std::span<std::byte>(reinterpret_cast<std::byte*>(raw.data()),
                                              static_cast<size_t>(raw.size()))});
    }
    nb::gil_scoped_release release;
    return reader_.read(load_items, threads).bytes_read;
  }

 private:
  static dist::Reader open(const std::string& dir) {
    nb::gil_scoped_release release;
    return dist::Reader::open(dir);
  }
  dist::Reader reader_;
};

// A PyTorch DCP folder opened for reading (metadata parsed once), for loading DCP checkpoints
// into sharded state dicts: every tensor read by box.
class PyDcpReader {
 public:
  explicit PyDcpReader(const std::string& dir) : reader_(open(dir)) {}

  nb::list tensors() const { return tensor_list(reader_.metadata().tensors); }
  nb::list value_keys() const {
    nb::list out;
    for (const auto& b : reader_.metadata().bytes) out.append(b.name);
    return out;
  }
  nb::object read_value(const std::string& name) const {
    pt::Value v;
    {
      nb::gil_scoped_release release;
      v = reader_.read_value(name);
    }
    // DCP saves tensors as tensor items: only an exotic object holds one inside a value.
    return value_to_python(v, [&](const pt::TorchTensor&) -> nb::object {
      throw Error(ErrorCode::Unsupported, "DCP value '" + name + "' holds a tensor");
    });
  }
  // (dtype, shape, raw) of the box.
  nb::tuple read_box(const std::string& name, const Shape& offsets, const Shape& sizes) const {
    Tensor t;
    {
      nb::gil_scoped_release release;
      t = reader_.read_box(name, offsets, sizes);
    }
    return nb::make_tuple(std::string(dtype_name(t.dtype())), shape_list(t.shape()), raw_of(t));
  }
  // The box straight into `raw` (the caller's memory, row-major, exactly the box's bytes in the
  // tensor's own dtype): no temporary tensor, no copy afterwards.
  void read_box_into(const std::string& name, const Shape& offsets, const Shape& sizes,
                     RawInOut raw) const {
    const DType dtype = reader_.tensor(name).dtype;
    std::span<std::byte> dst(reinterpret_cast<std::byte*>(raw.data()), raw.size());
    nb::gil_scoped_release release;
    reader_.read_box_into(name, offsets, sizes, dtype, dst);
  }

 private:
  static dcp::DcpReader open(const std::string& dir) {
    nb::gil_scoped_release release;
    return dcp::DcpReader::open(dir);
  }
  dcp::DcpReader reader_;
};

}  // namespace

void bind_dist(nb::module_& m) {
  // An async save's staging copy in one call: `sizes[i]` bytes from address `addresses[i]` to
  // dst[offsets[i], offsets[i] + sizes[i]), with the GIL released, by the C++ CheckpointIO's
  // staging copy: 8 MiB pieces on `threads` threads (torch's own thread count, so that ranks
  // sharing a machine do not oversubscribe it). Addresses, not arrays: making a view of each of
  // thousands of tensors in Python cost more than the copy of the small ones. Internal to
  // ckptio.dist, whose caller holds every source alive for the call; the destination is checked.
  m.def("copy_addresses_into", [](const std::vector<uintptr_t>& addresses,
                                  const std::vector<uint64_t>& sizes, RawInOut dst,
                                  const std::vector<uint64_t>& offsets, unsigned threads) {
    if (addresses.size() != sizes.size() || sizes.size() != offsets.size()) {
      throw Error(ErrorCode::InvalidArgument,
                  "copy_addresses_into: addresses, sizes and offsets differ in count");
    }
    std::vector<checkpoint::CopyTask> tasks;
    tasks.reserve(sizes.size());
    for (size_t i = 0; i < sizes.size(); ++i) {
      if (offsets[i] > dst.size() || sizes[i] > dst.size() - offsets[i]) {
        throw Error(ErrorCode::InvalidArgument,
                    "copy_addresses_into: source " + std::to_string(i) + " (" +
                        std::to_string(sizes[i]) + " bytes at " + std::to_string(offsets[i]) +
                        ") does not fit the destination of " + std::to_string(dst.size()) +
                        " bytes");
      }
      if (sizes[i] != 0 && addresses[i] == 0) {
        throw Error(ErrorCode::InvalidArgument,
                    "copy_addresses_into: source " + std::to_string(i) + " has no memory");
      }
      tasks.push_back({reinterpret_cast<const std::byte*>(addresses[i]),
                       reinterpret_cast<std::byte*>(dst.data()) + offsets[i], sizes[i]});
    }
    nb::gil_scoped_release release;
    checkpoint::parallel_copy(tasks, std::max(1u, threads));
  }, nb::arg("addresses"), nb::arg("sizes"), nb::arg("dst"), nb::arg("offsets"),
     nb::arg("threads") = 1);
  m.def("dist_save", &dist_save, nb::arg("communicator"), nb::arg("dir"), nb::arg("items"),
        nb::arg("replace"), nb::arg("sync"), nb::arg("epoch"), nb::arg("global_step"));
  m.def("is_distributed_checkpoint", [](const std::string& dir) {
    nb::gil_scoped_release release;
    return dist::is_distributed_checkpoint(dir);
  });
  m.def("is_dcp_checkpoint", [](const std::string& dir) {
    nb::gil_scoped_release release;
    return dcp::is_dcp_checkpoint(dir);
  });
  nb::class_<PyDistReader>(m, "DistReader")
      .def(nb::init<const std::string&>(), nb::arg("dir"))
      .def("tensors", &PyDistReader::tensors)
      .def("world_size", &PyDistReader::world_size)
      .def("read", &PyDistReader::read, nb::arg("items"), nb::arg("threads") = 0);
  nb::class_<PyDcpReader>(m, "DcpReader")
      .def(nb::init<const std::string&>(), nb::arg("dir"))
      .def("tensors", &PyDcpReader::tensors)
      .def("value_keys", &PyDcpReader::value_keys)
      .def("read_value", &PyDcpReader::read_value, nb::arg("name"))
      .def("read_box", &PyDcpReader::read_box, nb::arg("name"), nb::arg("offsets"),
           nb::arg("sizes"))
      .def("read_box_into", &PyDcpReader::read_box_into, nb::arg("name"), nb::arg("offsets"),
           nb::arg("sizes"), nb::arg("raw"));
}

}  // namespace ckptio::python
