// safetensors for Python: the core's reader and writer behind ckptio/safetensors.py. Tensors cross
// as (name, dtype name, shape, raw uint8 bytes) (tensor_bridge.h); the GIL is released around
// every parse, read and write.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/filesystem.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "bindings.h"
#include "ckptio/async_writer.h"
#include "ckptio/dtype.h"
#include "ckptio/error.h"
#include "ckptio/parallel_reader.h"
#include "ckptio/safetensors.h"
#include "tensor_bridge.h"

namespace nb = nanobind;

namespace ckptio::python {
namespace {

// (name, dtype, shape, raw) as Python hands tensors to the writers.
using TensorIn = std::tuple<std::string, std::string, Shape, RawIn>;
// (name, dtype, shape) as the readers describe tensors.
using TensorDesc = std::tuple<std::string, std::string, Shape>;

std::vector<NamedTensor> named_views(const std::vector<TensorIn>& tensors) {
  std::vector<NamedTensor> named;
  named.reserve(tensors.size());
  for (const auto& [name, dtype, shape, raw] : tensors) {
    named.push_back(NamedTensor{name, view_of(name, dtype, shape, raw)});
  }
  return named;
}

// None -> no "__metadata__" (as the safetensors package writes); a dict -> exactly that dict.
SafetensorsWriteOptions write_options(const std::optional<Metadata>& metadata, bool sync) {
  SafetensorsWriteOptions options;
  options.metadata = metadata;
  options.omit_metadata = !metadata.has_value();
  options.sync = sync;
  return options;
}

TensorDesc describe(const TensorInfo& info) {
  return {info.name, std::string(dtype_name(info.dtype)), info.shape};
}

// An open file; close() drops the reader (tensors already handed out keep their mapping alive).
// Calls that release the GIL work on a copy of the reader (a shared handle), so that close() from
// another thread cannot free it under them.
class SafeFile {
 public:
  SafeFile(const std::filesystem::path& path, bool use_pread) {
    nb::gil_scoped_release release;
    reader_.emplace(SafetensorsReader::open(path, {.mode = use_pread ? ReadMode::Pread : ReadMode::Mmap}));
  }

  SafetensorsReader reader() const {
    if (!reader_) throw Error(ErrorCode::InvalidArgument, "the file is closed");
    return *reader_;
  }

  void close() { reader_.reset(); }
  bool closed() const { return !reader_.has_value(); }

  std::vector<TensorDesc> tensors() const {
    std::vector<TensorDesc> out;
    SafetensorsReader r = reader();
    for (const TensorInfo& info : r.tensors()) out.push_back(describe(info));
    return out;
  }

  TensorDesc info(const std::string& name) const { return describe(reader().info(name)); }

  nb::object tensor(const std::string& name) const {
    SafetensorsReader r = reader();
    Tensor t;
    {
      nb::gil_scoped_release release;
      t = r.tensor(name);
    }
    return raw_of(t);
  }

  void read_into(const std::string& name, RawInOut raw) const {
    SafetensorsReader r = reader();
    nb::gil_scoped_release release;
    r.read_into(name, std::span<std::byte>(reinterpret_cast<std::byte*>(raw.data()), raw.size()));
  }

  // Fills each raw from its tensor with parallel preads (io::read_parallel), checking sizes first.
  void read_many_into(const std::vector<std::string>& names, std::vector<RawInOut> raws,
                      unsigned threads) const {
    SafetensorsReader r = reader();
    if (names.size() != raws.size()) {
      throw Error(ErrorCode::InvalidArgument, "read_many_into: names and buffers differ in count");
    }
    std::vector<io::ReadRange> requests;
    requests.reserve(names.size());
    for (size_t i = 0; i < names.size(); ++i) {
      const TensorInfo& info = r.info(names[i]);
      if (raws[i].size() != info.nbytes()) {
        throw Error(ErrorCode::InvalidArgument,
                    r.path().string() + ": tensor '" + names[i] + "' has " +
                        std::to_string(info.nbytes()) + " bytes, buffer has " +
                        std::to_string(raws[i].size()));
      }
      if (info.nbytes() == 0) continue;
      requests.push_back(io::ReadRange{
          .file = &r.file(),
          .offset = r.header().data_start + info.begin,
          .dst = std::span<std::byte>(reinterpret_cast<std::byte*>(raws[i].data()), raws[i].size()),
          .tensor = names[i]});
    }
    io::ParallelReadOptions options;
    options.threads = threads;
    nb::gil_scoped_release release;
    io::read_parallel(requests, options);
  }

 private:
  std::optional<SafetensorsReader> reader_;
};

}  // namespace

void bind_safetensors(nb::module_& m) {
  m.def("dtype_names", [] {
    std::vector<std::string> names;
    for (int i = 0; i < kDTypeCount; ++i) {
      names.emplace_back(dtype_name(static_cast<DType>(i)));
    }
    return names;
  }, "Every safetensors dtype name, in the format's order.");
  m.def("dtype_bits", [](const std::string& name) {
    std::optional<DType> dtype = parse_dtype(name);
    if (!dtype) throw Error(ErrorCode::InvalidArgument, "unknown safetensors dtype '" + name + "'");
    return dtype_bits(*dtype);
  }, nb::arg("dtype"), "Bits per element of a safetensors dtype (4 for F4, 6 for the F6 kinds).");

  nb::class_<SafeFile>(m, "SafeFile", "An open, validated safetensors file.")
      .def(nb::init<const std::filesystem::path&, bool>(), nb::arg("path"),
           nb::arg("use_pread") = false)
      .def_prop_ro("path", [](const SafeFile& f) { return f.reader().path(); })
      .def_prop_ro("closed", &SafeFile::closed)
      .def("close", &SafeFile::close)
      .def("metadata", [](const SafeFile& f) { return f.reader().metadata(); })
      .def("tensors", &SafeFile::tensors, "(name, dtype, shape) of every tensor, in data order.")
      .def("info", &SafeFile::info, nb::arg("name"))
      .def("byte_range", [](const SafeFile& f, const std::string& name) {
        SafetensorsReader r = f.reader();
        const TensorInfo& info = r.info(name);
        uint64_t start = r.header().data_start;
        return std::make_pair(start + info.begin, start + info.end);
      }, nb::arg("name"), "[begin, end) of the tensor's bytes in the file (absolute offsets).")
      .def_prop_ro("file_size", [](const SafeFile& f) { return f.reader().file_size(); })
      .def("has", [](const SafeFile& f, const std::string& name) {
        return f.reader().find(name) != nullptr;
      }, nb::arg("name"))
      .def("tensor", &SafeFile::tensor, nb::arg("name"),
           "The tensor's bytes without a copy (read-only when the file is memory-mapped).")
      .def("read_into", &SafeFile::read_into, nb::arg("name"), nb::arg("raw"))
      .def("read_many_into", &SafeFile::read_many_into, nb::arg("names"), nb::arg("raws"),
           nb::arg("threads") = 0);

  m.def("save_file", [](const std::filesystem::path& path, const std::vector<TensorIn>& tensors,
                        const std::optional<Metadata>& metadata, bool sync, bool direct_io) {
    std::vector<NamedTensor> named = named_views(tensors);
    SafetensorsWriteOptions options = write_options(metadata, sync);
    io::AsyncWriterOptions writer;
    writer.direct_io = direct_io;
    options.writer = &writer;
    nb::gil_scoped_release release;
    save_safetensors(path, named, options);
  }, nb::arg("path"), nb::arg("tensors"), nb::arg("metadata").none(), nb::arg("sync") = true,
     nb::arg("direct_io") = false,
     "Crash-safe write of [(name, dtype, shape, raw)]; direct_io: O_DIRECT for the aligned part.");

  m.def("serialize", [](const std::vector<TensorIn>& tensors,
                        const std::optional<Metadata>& metadata) {
    std::vector<NamedTensor> named = named_views(tensors);
    SafetensorsWriteOptions options = write_options(metadata, false);
    std::string bytes;
    {
      nb::gil_scoped_release release;
      bytes = serialize_safetensors(named, options);
    }
    return nb::bytes(bytes.data(), bytes.size());
  }, nb::arg("tensors"), nb::arg("metadata").none(), "The file's bytes for [(name, dtype, shape, raw)].");

  m.def("deserialize", [](nb::bytes data) {
    std::optional<Metadata> metadata;
    std::vector<std::pair<TensorDesc, Tensor>> loaded;
    {
      std::span<const std::byte> file(static_cast<const std::byte*>(data.data()), data.size());
      nb::gil_scoped_release release;
      SafetensorsHeader header = parse_safetensors(file, "<bytes>");
      metadata = std::move(header.metadata);
      loaded.reserve(header.tensors.size());
      for (const TensorInfo& info : header.tensors) {
        loaded.emplace_back(describe(info),
                            Tensor::copy_of(info.dtype, info.shape,
                                            file.subspan(header.data_start + info.begin,
                                                         info.nbytes())));
      }
    }
    nb::list tensors;
    for (auto& [desc, tensor] : loaded) {
      auto& [name, dtype, shape] = desc;
      tensors.append(nb::make_tuple(name, dtype, shape, raw_of(tensor)));
    }
    return nb::make_tuple(metadata, tensors);
  }, nb::arg("data"), "(metadata or None, [(name, dtype, shape, raw)]) of a file held in bytes.");
}

}  // namespace ckptio::python
