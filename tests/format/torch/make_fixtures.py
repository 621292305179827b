# Writes the .pt fixtures the torchfile tests read, with the system PyTorch, and next to each one
# a manifest of what PyTorch has in memory: every leaf of the saved object flattened to dotted
# names (the same rule as ckptio::torch::flatten), each tensor's dtype, shape, contiguous bytes,
# storage identity and flags, each other leaf as JSON.
#
# usage: /usr/bin/python3 make_fixtures.py OUT_DIR
import collections
import io
import json
import math
import os
import pickle
import sys
import tarfile
import zipfile

import warnings

import torch

warnings.filterwarnings("ignore")

OUT = sys.argv[1]
torch.manual_seed(0)

DTYPE_NAMES = {
    torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL", torch.complex64: "C64",
}


def key_name(k):
    if isinstance(k, str):
        return k
    if isinstance(k, bool):
        return "True" if k else "False"
    if isinstance(k, int):
        return str(k)
    return repr(k)


def tensor_bytes(t):
    flat = t.detach().contiguous().reshape(-1)
    if flat.dtype == torch.bfloat16:
        flat = flat.view(torch.int16)
    return flat.numpy().tobytes()


def flatten(obj, name, out):
    join = (lambda p: p) if name == "" else (lambda p: name + "." + p)
    if isinstance(obj, dict) and len(obj) > 0:
        for k, v in obj.items():
            flatten(v, join(key_name(k)), out)
    elif isinstance(obj, (list, tuple)) and len(obj) > 0:
        for i, v in enumerate(obj):
            flatten(v, join(str(i)), out)
    else:
        out.append((name if name or not isinstance(obj, torch.Tensor) else "tensor", obj))


def jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, bytes):
        return {"__bytes__": v.hex()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {key_name(k): jsonable(x) for k, x in v.items()}
    return v


def manifest(name, obj):
    leaves = []
    flatten(obj, "", leaves)
    entries = []
    blob = bytearray()
    for leaf_name, v in leaves:
        if isinstance(v, torch.Tensor):
            data = tensor_bytes(v)
            entries.append({
                "name": leaf_name, "kind": "tensor", "dtype": DTYPE_NAMES[v.dtype],
                "shape": list(v.shape), "offset": len(blob), "nbytes": len(data),
                "storage": v.storage().data_ptr(), "storage_offset": v.storage_offset(),
                "stride": list(v.stride()), "contiguous": v.is_contiguous(),
                "parameter": isinstance(v, torch.nn.Parameter),
                "requires_grad": v.requires_grad,
            })
            blob += data
        else:
            entries.append({"name": leaf_name, "kind": "value", "json": jsonable(v)})
    with open(os.path.join(OUT, name + ".manifest.json"), "w") as f:
        json.dump(entries, f)
    with open(os.path.join(OUT, name + ".bytes"), "wb") as f:
        f.write(blob)


def save(name, obj, **kwargs):
    torch.save(obj, os.path.join(OUT, name + ".pt"), **kwargs)
    manifest(name, obj)


def model():
    torch.manual_seed(1)
    m = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
        torch.nn.Linear(16, 5), torch.nn.LayerNorm(5))
    m(torch.randn(2, 3, 4, 4))  # updates batch norm running stats and num_batches_tracked
    return m


# --- readable fixtures -------------------------------------------------------------------------
m = model()
save("model", m.state_dict())

dtypes = {}
for dt in DTYPE_NAMES:
    if dt == torch.bool:
        dtypes["bool"] = torch.tensor([True, False, True])
    elif dt.is_complex:
        dtypes["c64"] = torch.randn(3, dtype=dt)
    elif dt.is_floating_point:
        dtypes[str(dt).split(".")[1]] = torch.randn(2, 3).to(dt)
    else:
        dtypes[str(dt).split(".")[1]] = torch.arange(-3, 3).to(dt) if dt != torch.uint8 else torch.arange(250, 256).to(dt)
dtypes["scalar"] = torch.tensor(3.5)
dtypes["scalar_long"] = torch.tensor(-7)
dtypes["empty"] = torch.zeros(0, 3)
dtypes["empty_1d"] = torch.zeros(0, dtype=torch.int64)
save("dtypes", dtypes)

base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
views = {
    "base": base, "transposed": base.t(), "slice": base[1:3, 2:5], "row": base[2],
    "every_other": base[:, ::2], "expanded": torch.tensor([1.0, 2.0, 3.0]).expand(4, 3),
    "alias": base, "separate": base.clone(),
}
save("views", views)

save("parameters", {"p": torch.nn.Parameter(torch.randn(3, 4)),
                    "frozen": torch.nn.Parameter(torch.randn(2), requires_grad=False),
                    "grad": torch.randn(2, 2).requires_grad_()})

am = model()
opt = torch.optim.AdamW(am.parameters(), lr=1e-3, weight_decay=0.01)
for _ in range(3):
    loss = am(torch.randn(2, 3, 4, 4)).pow(2).sum()
    opt.zero_grad()
    loss.backward()
    opt.step()
save("adamw", opt.state_dict())

sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
sched.step()
training = {
    "model": am.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
    "epoch": 3, "step": 1200, "loss": 0.25, "name": "run-7", "flags": [True, False, None],
    "pair": (1, 2.5, "x"), "blob": b"\x00\x01abc\xff", "big": 2 ** 40, "neg": -5,
    "nan": float("nan"), "empty_list": [], "empty_dict": {}, "unicode": "d\u00e9j\u00e0 \u4e2d",
    "int_keys": {0: "zero", 7: "seven"},
}
save("training", training)
save("protocol4", m.state_dict(), pickle_protocol=4)
save("legacy", training, _use_new_zipfile_serialization=False)
save("legacy_views", views, _use_new_zipfile_serialization=False)

buf = io.BytesIO()
torch.save(m.state_dict(), buf)
with open(os.path.join(OUT, "fileobj.pt"), "wb") as f:
    f.write(buf.getvalue())
manifest("fileobj", m.state_dict())

# Long enough for LONG_BINPUT / LONG_BINGET (memo > 255) and BININT2.
save("many", {"layer%d.weight" % i: torch.full((2,), float(i)) for i in range(300)})

# Big-endian: the dtypes archive rewritten as a big-endian machine would write it, by Python's
# zipfile (a second zip writer: no 64-byte alignment).
src = zipfile.ZipFile(os.path.join(OUT, "dtypes.pt"))
storage_types = {}
pkl = src.read("dtypes/data.pkl")


class Finder(pickle.Unpickler):
    def persistent_load(self, pid):
        storage_types[pid[2]] = pid[1]
        return torch.UntypedStorage(0) if hasattr(torch, "UntypedStorage") else None

    def find_class(self, module, name):
        if name.startswith("_rebuild_tensor"):
            return lambda *a: None
        return super().find_class(module, name)


Finder(io.BytesIO(pkl)).load()
with zipfile.ZipFile(os.path.join(OUT, "bigendian.pt"), "w", zipfile.ZIP_STORED) as dst:
    for info in src.infolist():
        data = src.read(info.filename)
        key = info.filename.split("/")[-1]
        if info.filename.startswith("dtypes/data/"):
            st = storage_types[key]
            item = st(0).element_size() if hasattr(st(0), "element_size") else 1
            if st.__name__ == "ComplexFloatStorage":
                item = 4
            data = b"".join(data[i:i + item][::-1] for i in range(0, len(data), item))
        dst.writestr(info.filename.replace("dtypes/", "be/"), data)
    dst.writestr("be/byteorder", b"big")
manifest("bigendian", dtypes)

# TorchScript archive.
torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), os.path.join(OUT, "script.pt"))

# --- hostile fixtures ---------------------------------------------------------------------------
MARKER = os.path.join(OUT, "PWNED")


class System:
    def __reduce__(self):
        return (os.system, ("touch " + MARKER,))


class Eval:
    def __reduce__(self):
        return (eval, ("open(%r, 'w').write('x')" % MARKER,))


def archive(name, pkl_bytes, records=None, prefix="archive", version=b"3\n",
            compression=zipfile.ZIP_STORED, extra=()):
    with zipfile.ZipFile(os.path.join(OUT, name), "w", compression) as z:
        z.writestr(prefix + "/data.pkl", pkl_bytes)
        for key, data in (records or {}).items():
            z.writestr(prefix + "/data/" + key, data)
        if version is not None:
            z.writestr(prefix + "/version", version)
        for n, data in extra:
            z.writestr(n, data)


raw_system = pickle.dumps({"w": System()}, protocol=2)
archive("evil_system.pt", raw_system)
archive("evil_eval.pt", pickle.dumps([Eval()], protocol=2))
archive("evil_system_p4.pt", pickle.dumps({"w": System()}, protocol=4))
with open(os.path.join(OUT, "evil_raw.pkl"), "wb") as f:
    f.write(raw_system)
# protocol-0 INST with binary arguments: MARK, BINUNICODE "touch ...", INST os system, STOP.
cmd = ("touch " + MARKER).encode()
inst = b"\x80\x02(X" + len(cmd).to_bytes(4, "little") + cmd + b"ios\nsystem\n."
archive("evil_inst.pt", inst)
archive("evil_getattr.pt", b"\x80\x02cbuiltins\ngetattr\n.")


class StorageMarker:
    def __init__(self, pid):
        self.pid = pid


class Rebuild:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


class PidPickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, StorageMarker) else None


def crafted(obj, protocol=2):
    b = io.BytesIO()
    PidPickler(b, protocol=protocol).dump(obj)
    return b.getvalue()


def tensor(numel_declared, offset, size, stride, storage_type=torch.FloatStorage, key="0",
           location="cpu", tag="storage"):
    pid = (tag, storage_type, key, location, numel_declared)
    return Rebuild(torch._utils._rebuild_tensor_v2,
                   (StorageMarker(pid), offset, size, stride, False, collections.OrderedDict()))


four_floats = torch.arange(4, dtype=torch.float32).numpy().tobytes()
# The control: a hand-made archive that is valid (torch and ckptio both load it).
archive("crafted_ok.pt", crafted({"t": tensor(4, 1, (3,), (1,))}), {"0": four_floats})
archive("short_storage.pt", crafted({"t": tensor(8, 0, (8,), (1,))}), {"0": four_floats})
archive("long_storage.pt", crafted({"t": tensor(2, 0, (2,), (1,))}), {"0": four_floats})
archive("view_past_storage.pt", crafted({"t": tensor(4, 2, (3,), (1,))}), {"0": four_floats})
archive("view_past_storage_2d.pt", crafted({"t": tensor(4, 0, (2, 2), (3, 1))}), {"0": four_floats})
archive("negative_stride.pt", crafted({"t": tensor(4, 3, (4,), (-1,))}), {"0": four_floats})
archive("negative_offset.pt", crafted({"t": tensor(4, -1, (1,), (1,))}), {"0": four_floats})
archive("huge_numel.pt", crafted({"t": tensor(2 ** 40, 0, (2 ** 40,), (1,))}), {"0": four_floats})
archive("huge_expand.pt", crafted({"t": tensor(4, 0, (2 ** 20, 2 ** 20), (0, 0))}), {"0": four_floats})
archive("size_not_ints.pt", crafted({"t": tensor(4, 0, ("a",), (1,))}), {"0": four_floats})
archive("missing_record.pt", crafted({"t": tensor(4, 0, (4,), (1,), key="9")}), {"0": four_floats})
archive("bad_pid_tag.pt", crafted({"t": tensor(4, 0, (4,), (1,), tag="module")}), {"0": four_floats})
archive("bad_location.pt", crafted({"t": tensor(4, 0, (4,), (1,), location="$(reboot)")}), {"0": four_floats})
archive("storage_not_allowed.pt",
        crafted({"t": tensor(4, 0, (4,), (1,), storage_type=collections.OrderedDict)}),
        {"0": four_floats})
archive("compressed.pt", crafted({"t": tensor(4, 0, (4,), (1,))}), {"0": four_floats},
        compression=zipfile.ZIP_DEFLATED)
archive("version0.pt", crafted({"t": 1}), version=b"0\n")
archive("version999.pt", crafted({"t": 1}), version=b"999\n")
archive("no_version.pt", crafted({"t": 1}), version=None)
archive("byteorder_garbage.pt", crafted({"t": 1}), extra=[("archive/byteorder", b"middle")])
archive("outside_prefix.pt", crafted({"t": 1}), extra=[("other/file", b"x")])
archive("dotdot.pt", crafted({"t": 1}), extra=[("archive/../../etc/passwd", b"x")])
import warnings
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    archive("duplicate.pt", crafted({"t": 1}), extra=[("archive/data.pkl", crafted({"t": 2}))])

# Legacy tar format: members sys_info, pickle, storages, tensors.
with tarfile.open(os.path.join(OUT, "legacy_tar.pt"), "w") as tar:
    for member in ("sys_info", "pickle", "storages", "tensors"):
        data = pickle.dumps({"m": member}, protocol=2)
        info = tarfile.TarInfo(member)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

# Legacy stream whose storage claims 2^40 elements in a tiny file.
legacy = bytearray(open(os.path.join(OUT, "legacy.pt"), "rb").read())
MAGIC = pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2)
b = io.BytesIO()
b.write(MAGIC)
b.write(pickle.dumps(1001, protocol=2))
b.write(pickle.dumps({"protocol_version": 1001, "little_endian": True,
                      "type_sizes": {"short": 2, "int": 4, "long": 8}}, protocol=2))
b.write(crafted({"t": Rebuild(torch._utils._rebuild_tensor_v2,
                              (StorageMarker(("storage", torch.FloatStorage, "1", "cpu", 2 ** 40, None)),
                               0, (2 ** 40,), (1,), False, collections.OrderedDict()))}))
b.write(pickle.dumps(["1"], protocol=2))
b.write((2 ** 40).to_bytes(8, "little"))
b.write(b"\x00" * 64)
with open(os.path.join(OUT, "legacy_huge.pt"), "wb") as f:
    f.write(b.getvalue())

# Shapes that are small on disk but huge once their shared objects are walked at every place they
# appear (memo references). Each must fail with a typed error, quickly and in little memory.
# 400 chains of 500 one-tuples, each around the previous chain: a 200,000-level tree.
chains, c = [], ()
for _ in range(400):
    for _ in range(500):
        c = (c,)
    chains.append(c)
torch.save(chains, os.path.join(OUT, "deep_memo_chains.pt"))
del chains, c
# d = {'a': d, 'b': d}, 40 times: 2^41 nodes in a few hundred bytes of pickle.
d = {}
for _ in range(40):
    d = {"a": d, "b": d}
torch.save(d, os.path.join(OUT, "dict_bomb.pt"))
# 1000 transposed views of one 4 MB storage: 4 GB once made contiguous.
base = torch.zeros(1000, 1000)
torch.save([base.t() for _ in range(1000)], os.path.join(OUT, "transposed_views.pt"))
# bytearray(blob) 3000 times on one memoised 1 MiB blob: 3 GiB of bytes if each call copied.
blob_args = (b"x" * (1 << 20),)
archive("bytearray_bomb.pt", crafted([Rebuild(bytearray, blob_args) for _ in range(3000)], protocol=4))
print("fixtures written to", OUT)
