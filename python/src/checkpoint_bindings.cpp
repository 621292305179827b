// ckptio._core's CheckpointIO, load_into/load_all, torch_load, save_sharded: the C++ side of ckptio.torch (CheckpointIO, load_checkpoint, torch-file
// reading, sharded saves). Tensors cross as (name, dtype, shape, raw bytes) per tensor_bridge.h;
// JSON components cross as text. Every call that reads or writes files releases the GIL.
#include <nlohmann/json.hpp>
#include <nanobind/nanobind.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "bindings.h"
#include "ckptio/checkpoint_io.h"
#include "ckptio/error.h"
#include "ckptio/hub.h"
#include "ckptio/load.h"
#include "ckptio/sharded.h"
#include "ckptio/torch_pickle.h"
#include "tensor_bridge.h"
#include "value_bridge.h"

namespace nb = nanobind;
using nlohmann::json;

namespace ckptio::python {

namespace {

// (name, dtype, shape, raw) as Python hands tensors in.
using TensorIn = std::tuple<std::string, std::string, Shape, RawIn>;
// (param, key, dtype, shape, raw): one optimizer state tensor.
using OptimizerTensorIn = std::tuple<std::string, std::string, std::string, Shape, RawIn>;
// (name, dtype, shape, writable raw): a load destination.
using TargetIn = std::tuple<std::string, std::string, Shape, RawInOut>;

// Python's memory as a Tensor, without a copy. The caller keeps the arrays alive while in use.
Tensor borrow_tensor(const std::string& name, const std::string& dtype, const Shape& shape,
                     const RawIn& raw) {
  const TensorView view = view_of(name, dtype, shape, raw);
  auto* data = const_cast<std::byte*>(view.bytes.data());
  return Tensor::borrow(view.dtype, view.shape, std::span<std::byte>(data, view.bytes.size()));
}

TensorMap tensor_map(const std::vector<TensorIn>& tensors) {
  TensorMap out;
  for (const auto& [name, dtype, shape, raw] : tensors) {
    if (!out.emplace(name, borrow_tensor(name, dtype, shape, raw)).second) {
      throw Error(ErrorCode::InvalidArgument, "tensor '" + name + "' is given twice");
    }
  }
  return out;
}

json parse_json(const std::string& what, const std::string& text) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw Error(ErrorCode::InvalidArgument, what + ": not JSON: " + e.what());
  }
}

nb::list tensors_out(const TensorMap& tensors) {
  nb::list out;
  for (const auto& [name, tensor] : tensors) {
    out.append(nb::make_tuple(name, std::string(dtype_name(tensor.dtype())), shape_list(tensor.shape()),
                              raw_of(tensor)));
  }
  return out;
}

nb::list strings(const std::vector<std::string>& items) {
  nb::list out;
  for (const auto& s : items) out.append(s);
  return out;
}

nb::dict running_out(const RunningStates& r) {
  nb::dict d;
  d["epoch"] = r.epoch;
  d["step"] = r.step;
  d["global_step"] = r.global_step;
  d["batch_size"] = r.batch_size;
  d["actual_update_step"] = r.actual_update_step;
  return d;
}

nb::dict entry_out(const CheckpointEntry& e) {
  nb::dict d;
  d["path"] = e.path.string();
  d["name"] = e.name;
  d["epoch"] = e.epoch;
  d["global_step"] = e.global_step;
  d["size_bytes"] = e.size_bytes;
  d["state"] = std::string(checkpoint_state_name(e.state));
  d["is_temp"] = e.is_temp;
  d["problem"] = e.problem;
  return d;
}

nb::dict verify_out(const VerifyReport& r) {
  nb::dict d;
  d["path"] = r.path.string();
  d["ok"] = r.ok;
  d["has_manifest"] = r.has_manifest;
  d["checksums_checked"] = r.checksums_checked;
  d["files"] = r.files;
  d["bytes"] = r.bytes;
  d["problems"] = strings(r.problems);
  return d;
}

SnapshotMode snapshot_mode(const std::string& name) {
  if (name == "copy") return SnapshotMode::Copy;
  if (name == "borrow") return SnapshotMode::Borrow;
  throw Error(ErrorCode::InvalidArgument, "snapshot must be \"copy\" or \"borrow\", not \"" + name + "\"");
}

WeightsChoice weights_choice(const std::string& name) {
  if (name == "auto") return WeightsChoice::Auto;
  if (name == "model") return WeightsChoice::Model;
  if (name == "ema") return WeightsChoice::Ema;
  throw Error(ErrorCode::InvalidArgument, "weights must be auto, model or ema, not " + name);
}

DType dtype_named(const std::string& name) {
  std::optional<DType> d = parse_dtype(name);
  if (!d) throw Error(ErrorCode::InvalidArgument, "unknown dtype '" + name + "'");
  return *d;
}

class PyCheckpointIO {
 public:
  PyCheckpointIO(const std::string& dir, size_t keep_n_latest, bool async, const std::string& snapshot,
                 uint64_t max_shard_size, bool sync, nb::object on_phase) {
    CheckpointOptions options;
    if (!on_phase.is_none()) {
      // Called from whichever thread runs the phase; Python code needs the GIL there. The
      // destructor and wait() release the GIL, so the save thread can always take it.
      auto callback = std::make_shared<nb::object>(std::move(on_phase));
      options.on_phase = [callback](SavePhase phase) {
        nb::gil_scoped_acquire gil;
        try {
          (*callback)(std::string(save_phase_name(phase)));
        } catch (nb::python_error& e) {
          e.discard_as_unraisable("ckptio CheckpointIO on_phase");
        }
      };
      on_phase_ = callback;
    }
    options.keep_n_latest = keep_n_latest;
    options.async = async;
    options.snapshot = snapshot_mode(snapshot);
    options.max_shard_size = max_shard_size;
    options.sync = sync;
    io_ = std::make_unique<CheckpointIO>(dir, std::move(options));
  }

  std::string save(std::optional<std::vector<TensorIn>> model,
                   std::optional<std::vector<TensorIn>> ema,
                   std::optional<std::vector<OptimizerTensorIn>> optimizer_tensors,
                   std::optional<std::string> optimizer_meta, std::optional<std::string> lr_scheduler,
                   std::optional<std::string> sampler, const std::vector<int64_t>& running,
                   const std::string& extra, bool replace) {
    TrainingState state;
    if (model) state.model = tensor_map(*model);
    if (ema) state.ema = tensor_map(*ema);
    if (optimizer_meta) {
      OptimizerState opt;
      opt.meta = parse_json("optimizer state", *optimizer_meta).dump();
      if (optimizer_tensors) {
        for (const auto& [param, key, dtype, shape, raw] : *optimizer_tensors) {
          const std::string name = "state." + param + "." + key;
          opt.tensors[param].emplace(key, borrow_tensor(name, dtype, shape, raw));
        }
      }
      state.optimizer = std::move(opt);
    }
    if (lr_scheduler) state.lr_scheduler = parse_json("lr_scheduler state", *lr_scheduler).dump();
    if (sampler) state.sampler = parse_json("sampler state", *sampler).dump();
    if (running.size() != 5) throw Error(ErrorCode::InvalidArgument, "running states: 5 numbers");
    state.running = {running[0], running[1], running[2], running[3], running[4]};
    state.extra = parse_json("extra", extra).dump();
    CheckpointSaveOptions save_options;
    save_options.replace = replace;
    nb::gil_scoped_release release;
    return io_->save(state, save_options).string();
  }

  void wait() {
    nb::gil_scoped_release release;
    io_->wait();
  }

  bool busy() const { return io_->busy(); }

  nb::dict load(const std::string& which, bool model, bool ema, bool optimizer, bool lr_scheduler,
                bool sampler, bool strict, bool verify_checksums) {
    TensorMap model_map, ema_map;
    OptimizerState opt;
    std::string lr, smp;
    LoadTargets targets{model ? &model_map : nullptr, ema ? &ema_map : nullptr,
                        optimizer ? &opt : nullptr, lr_scheduler ? &lr : nullptr,
                        sampler ? &smp : nullptr};
    CheckpointLoadOptions options;
    options.strict = strict;
    options.verify_checksums = verify_checksums;
    LoadResult result;
    {
      nb::gil_scoped_release release;
      result = io_->load(which, targets, options);
    }
    return load_result_out(result, targets, model_map, ema_map, opt, lr, smp);
  }

  static nb::dict load_result_out(const LoadResult& result, const LoadTargets& targets,
                                  const TensorMap& model_map, const TensorMap& ema_map,
                                  const OptimizerState& opt, const std::string& lr,
                                  const std::string& smp) {
    auto has = [&result](const char* component) {
      for (const auto& c : result.missing_components) {
        if (c == component) return false;
      }
      return true;
    };
    nb::dict d;
    d["path"] = result.path.string();
    d["running"] = running_out(result.running);
    d["extra"] = result.extra;
    d["model"] = targets.model && has("model") ? nb::object(tensors_out(model_map)) : nb::none();
    d["ema"] = targets.ema && has("ema") ? nb::object(tensors_out(ema_map)) : nb::none();
    if (targets.optimizer && has("optimizer")) {
      nb::list tensors;
      for (const auto& [param, map] : opt.tensors) {
        for (const auto& [key, tensor] : map) {
          nb::list shape;
          for (int64_t s : tensor.shape()) shape.append(s);
          tensors.append(nb::make_tuple(param, key, std::string(dtype_name(tensor.dtype())), shape,
                                        raw_of(tensor)));
        }
      }
      d["optimizer"] = nb::make_tuple(tensors, opt.meta);
    } else {
      d["optimizer"] = nb::none();
    }
    d["lr_scheduler"] =
        targets.lr_scheduler && has("lr_scheduler") ? nb::object(nb::str(lr.c_str())) : nb::none();
    d["sampler"] =
        targets.sampler && has("sampler") ? nb::object(nb::str(smp.c_str())) : nb::none();
    d["missing_components"] = strings(result.missing_components);
    d["missing_keys"] = strings(result.missing);
    d["unexpected_keys"] = strings(result.unexpected);
    d["mismatched_keys"] = strings(result.mismatched);
    d["warnings"] = strings(result.warnings);
    return d;
  }

  nb::list list(bool full) const {
    std::vector<CheckpointEntry> entries;
    {
      nb::gil_scoped_release release;
      entries = io_->list(full ? VerifyDepth::Full : VerifyDepth::Sizes);
    }
    nb::list out;
    for (const auto& e : entries) out.append(entry_out(e));
    return out;
  }

  nb::object latest(bool full) const {
    std::optional<CheckpointEntry> e;
    {
      nb::gil_scoped_release release;
      e = io_->latest(full ? VerifyDepth::Full : VerifyDepth::Sizes);
    }
    return e ? nb::object(entry_out(*e)) : nb::none();
  }

  std::vector<std::string> prune(size_t keep) {
    std::vector<std::filesystem::path> removed;
    {
      nb::gil_scoped_release release;
      removed = io_->prune(keep);
    }
    std::vector<std::string> out;
    for (const auto& p : removed) out.push_back(p.string());
    return out;
  }

  nb::dict verify(const std::string& path, bool full) const {
    VerifyReport r;
    {
      nb::gil_scoped_release release;
      r = io_->verify(path, full ? VerifyDepth::Full : VerifyDepth::Sizes);
    }
    return verify_out(r);
  }

  std::string experiment_dir() const { return io_->experiment_dir().string(); }

  ~PyCheckpointIO() {
    // ~CheckpointIO waits for a save in flight, whose on_phase callback may need the GIL.
    nb::gil_scoped_release release;
    io_.reset();
  }
  PyCheckpointIO(const PyCheckpointIO&) = delete;
  PyCheckpointIO& operator=(const PyCheckpointIO&) = delete;

 private:
  std::unique_ptr<CheckpointIO> io_;
  std::shared_ptr<nb::object> on_phase_;
};

// --- torch files -------------------------------------------------------------------------------

// A tensor of a loaded torch file: a strided view of storages[storage]. Python rebuilds it with
// as_strided so views that share a storage share memory, as torch.load gives them.
struct TorchTensorRef {
  size_t storage = 0;
  std::string dtype;
  int64_t offset = 0;
  Shape sizes;
  std::vector<int64_t> strides;
  bool requires_grad = false;
  bool is_parameter = false;
};

// The torch file's object as Python data; each tensor becomes a TorchTensorRef to its storage.
nb::object tree_out(const pt::TorchFile& file, const pt::Value& root) {
  std::map<const pt::TorchStorage*, size_t> index;
  for (size_t i = 0; i < file.storages.size(); ++i) index[file.storages[i].get()] = i;
  return value_to_python(root, [&](const pt::TorchTensor& t) {
    TorchTensorRef ref;
    ref.storage = index.at(t.storage.get());
    ref.dtype = std::string(dtype_name(t.dtype));
    ref.offset = t.storage_offset;
    ref.sizes = t.sizes;
    ref.strides = t.strides;
    ref.requires_grad = t.requires_grad;
    ref.is_parameter = t.is_parameter;
    return nb::cast(ref);
  });
}

nb::tuple torch_load(const std::string& path, const std::string& key) {
  pt::TorchLoadOptions options;
  options.owned = true;  // writable heap memory, like torch.load's tensors
  std::optional<pt::TorchFile> file;
  {
    nb::gil_scoped_release release;
    file = pt::load_torch_file(path, options);
  }
  nb::list storages;
  for (const auto& s : file->storages) {
    Tensor bytes = Tensor::from_owner(s->dtype, Shape{static_cast<int64_t>(s->numel)}, s->bytes,
                                      s, Tensor::Storage::Heap);
    storages.append(nb::make_tuple(std::string(dtype_name(s->dtype)), s->numel, raw_of(bytes)));
  }
  const pt::Value& root = key.empty() ? file->root : pt::select_path(file->root, key);
  return nb::make_tuple(tree_out(*file, root), storages);
}

// --- load_checkpoint / save_sharded ------------------------------------------------------------

LoadOptions load_options(bool strict, const std::vector<std::pair<std::string, std::string>>& rename,
                         const std::string& weights, bool allow_pickle) {
  LoadOptions options;
  options.strict = strict;
  options.rename_keys = rename;
  options.source.weights = weights_choice(weights);
  options.source.allow_pickle = allow_pickle;
  // "hf://org/name" reaches the Hub; a plain path never does.
  options.source.hub = hub::resolver();
  return options;
}

nb::dict report_out(const LoadReport& r) {
  nb::dict d;
  d["source"] = r.source.path.string();
  d["kind"] = std::string(source_kind_name(r.source.kind));
  d["how"] = r.source.how;
  d["loaded"] = strings(r.loaded);
  d["missing"] = strings(r.missing);
  d["unexpected"] = strings(r.unexpected);
  d["mismatched"] = strings(r.mismatched);
  d["converted"] = strings(r.converted);
  d["bytes_read"] = r.bytes_read;
  d["summary"] = r.summary();
  return d;
}

nb::dict load_into(const std::string& source, const std::vector<TargetIn>& targets, bool strict,
                   const std::vector<std::pair<std::string, std::string>>& rename,
                   const std::string& weights, bool allow_pickle, bool allow_narrowing) {
  std::vector<LoadTarget> out;
  out.reserve(targets.size());
  for (const auto& [name, dtype, shape, raw] : targets) {
    out.push_back(LoadTarget{name, dtype_named(dtype), shape,
                             std::span<std::byte>(reinterpret_cast<std::byte*>(raw.data()),
                                                  static_cast<size_t>(raw.size()))});
  }
  LoadOptions options = load_options(strict, rename, weights, allow_pickle);
  options.allow_narrowing = allow_narrowing;
  LoadReport report;
  {
    nb::gil_scoped_release release;
    report = load_checkpoint(source, out, options);
  }
  return report_out(report);
}

nb::tuple load_all(const std::string& source,
                   const std::vector<std::pair<std::string, std::string>>& rename,
                   const std::optional<std::string>& dtype, const std::string& weights,
                   bool allow_pickle) {
  LoadOptions options = load_options(true, rename, weights, allow_pickle);
  if (dtype) options.dtype = dtype_named(*dtype);
  std::optional<LoadedCheckpoint> loaded;
  {
    nb::gil_scoped_release release;
    loaded = load_checkpoint(source, options);
  }
  return nb::make_tuple(tensors_out(loaded->tensors), report_out(loaded->report));
}

nb::dict save_sharded_py(const std::string& folder, const std::vector<TensorIn>& tensors,
                         uint64_t max_shard_size, const std::string& base_name,
                         const Metadata& metadata, bool sync) {
  std::vector<NamedTensor> named;
  named.reserve(tensors.size());
  for (const auto& [name, dtype, shape, raw] : tensors) {
    named.push_back(NamedTensor{name, view_of(name, dtype, shape, raw)});
  }
  ShardedWriteOptions options;
  options.max_shard_size = max_shard_size;
  options.base_name = base_name;
  options.metadata = metadata;
  options.sync = sync;
  ShardedWriteResult result;
  {
    nb::gil_scoped_release release;
    result = save_sharded(folder, named, options);
  }
  nb::dict d;
  nb::list shards;
  for (const auto& f : result.shards) shards.append(f.name);
  d["shards"] = shards;
  d["index"] = result.index ? nb::object(nb::str(result.index->name.c_str())) : nb::none();
  d["removed"] = strings(result.removed);
  d["total_size"] = result.total_size;
  return d;
}

}  // namespace

void bind_checkpoint(nb::module_& m) {

  nb::class_<PyCheckpointIO>(m, "CheckpointIO")
      .def(nb::init<const std::string&, size_t, bool, const std::string&, uint64_t, bool,
                    nb::object>(),
           nb::arg("exp_dir"), nb::arg("keep_n_latest"), nb::arg("async_save"), nb::arg("snapshot"),
           nb::arg("max_shard_size"), nb::arg("sync"), nb::arg("on_phase").none())
      .def("save", &PyCheckpointIO::save, nb::arg("model").none(), nb::arg("ema").none(),
           nb::arg("optimizer_tensors").none(), nb::arg("optimizer_meta").none(),
           nb::arg("lr_scheduler").none(), nb::arg("sampler").none(), nb::arg("running"),
           nb::arg("extra"), nb::arg("replace"))
      .def("wait", &PyCheckpointIO::wait)
      .def("busy", &PyCheckpointIO::busy)
      .def("load", &PyCheckpointIO::load, nb::arg("which"), nb::arg("model"), nb::arg("ema"),
           nb::arg("optimizer"), nb::arg("lr_scheduler"), nb::arg("sampler"), nb::arg("strict"),
           nb::arg("verify_checksums"))
      .def("list", &PyCheckpointIO::list, nb::arg("full"))
      .def("latest", &PyCheckpointIO::latest, nb::arg("full"))
      .def("prune", &PyCheckpointIO::prune, nb::arg("keep"))
      .def("verify", &PyCheckpointIO::verify, nb::arg("path"), nb::arg("full"))
      .def_prop_ro("experiment_dir", &PyCheckpointIO::experiment_dir);

  nb::class_<TorchTensorRef>(m, "TorchTensorRef")
      .def_ro("storage", &TorchTensorRef::storage)
      .def_ro("dtype", &TorchTensorRef::dtype)
      .def_ro("offset", &TorchTensorRef::offset)
      .def_ro("sizes", &TorchTensorRef::sizes)
      .def_ro("strides", &TorchTensorRef::strides)
      .def_ro("requires_grad", &TorchTensorRef::requires_grad)
      .def_ro("is_parameter", &TorchTensorRef::is_parameter);

  m.def("torch_load", &torch_load, nb::arg("path"), nb::arg("key"));
  m.def("load_into", &load_into, nb::arg("source"), nb::arg("targets"), nb::arg("strict"),
        nb::arg("rename_keys"), nb::arg("weights"), nb::arg("allow_pickle"),
        nb::arg("allow_narrowing"));
  m.def("load_all", &load_all, nb::arg("source"), nb::arg("rename_keys"), nb::arg("dtype").none(),
        nb::arg("weights"), nb::arg("allow_pickle"));
  m.def("save_sharded", &save_sharded_py, nb::arg("folder"), nb::arg("tensors"),
        nb::arg("max_shard_size"), nb::arg("base_name"), nb::arg("metadata"), nb::arg("sync"));
  // Sizes as the Python edge takes them ("5GB", "2GiB", bytes) to the bytes the C++ options hold.
  m.def("parse_size", [](const std::string& text) { return parse_size(text); }, nb::arg("text"));
}

}  // namespace ckptio::python
