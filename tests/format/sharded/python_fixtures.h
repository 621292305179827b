// Python (the system interpreter with PyTorch) that writes sharded folders the way other tools do:
// the transformers/huggingface_hub layout, the ColossalAI layout and pytorch_model-*.bin shards.
// The safetensors bytes are produced here from the format's rules (the reference writer's layout),
// independently of ckptio's writer; each fixture also dumps every tensor's raw bytes so the C++
// side can check values without trusting any safetensors code.
#pragma once

#include <cstdio>
#include <filesystem>
#include <functional>
#include <optional>
#include <random>
#include <string>

#include "support/test_util.h"

namespace ckptio::testing {

// PyTorch takes seconds to start and ctest runs every test case in its own process, so a fixture
// script runs once per distinct content: its output folder, named by a hash of the script, is
// built under a temp name and renamed into place; later processes reuse it. The folder is only
// ever read by tests. nullopt when the script fails.
inline std::optional<std::filesystem::path> cached_python_fixture(const std::string& name,
                                                                  const std::string& script) {
  namespace fs = std::filesystem;
  char hash[32];
  std::snprintf(hash, sizeof hash, "%016zx", std::hash<std::string>{}(script));
  const fs::path dir = fs::temp_directory_path() / ("ckptio-fixture-" + name + "-" + hash);
  if (fs::exists(dir / ".complete")) return dir;
  const fs::path work = dir.string() + ".tmp-" + std::to_string(std::random_device{}());
  fs::create_directories(work);
  if (run_python(work, script, work.string()) != 0) {
    fs::remove_all(work);
    return std::nullopt;
  }
  write_file(work / ".complete", "");
  std::error_code ec;
  fs::rename(work, dir, ec);
  if (ec) fs::remove_all(work);  // another process finished first: use its folder
  return fs::exists(dir / ".complete") ? std::optional(dir) : std::nullopt;
}

inline const std::string kShardFixturePython = R"PY(
import json, os, struct, sys
import torch

DT = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64",
      torch.int32: "I32", torch.uint8: "U8", torch.int8: "I8", torch.bool: "BOOL",
      torch.float64: "F64"}
# The reference writer orders tensors by dtype, larger alignment first, then by name.
RANK = {"BOOL": 0, "U8": 4, "I8": 5, "I16": 11, "F16": 13, "BF16": 14, "I32": 15, "F32": 17,
        "F64": 19, "I64": 20}

def raw(t):
    t = t.contiguous()
    if t.numel() == 0:
        return b""
    return t.view(-1).view(torch.uint8).numpy().tobytes() if t.dtype != torch.bool else t.numpy().tobytes()

def write_safetensors(path, tensors, metadata={"format": "pt"}):
    items = sorted(tensors.items(), key=lambda kv: (-RANK[DT[kv[1].dtype]], kv[0]))
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    off = 0
    blobs = []
    for name, t in items:
        b = raw(t)
        header[name] = {"dtype": DT[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)

def nbytes(t):
    return t.numel() * t.element_size()

# transformers' shard_checkpoint: greedy in key order, a new block only when the current one is
# non-empty and would overflow.
def split(sd, max_bytes):
    blocks = [[]]
    size = 0
    for k, t in sd.items():
        if size + nbytes(t) > max_bytes and len(blocks[-1]) > 0:
            blocks.append([])
            size = 0
        blocks[-1].append(k)
        size += nbytes(t)
    return [b for b in blocks if b] or [[]]

def save_hf(d, sd, max_bytes, base="model", extra_meta=None):
    os.makedirs(d, exist_ok=True)
    blocks = split(sd, max_bytes)
    n = len(blocks)
    if n == 1:
        meta = {"format": "pt"}
        meta.update(extra_meta or {})
        write_safetensors(os.path.join(d, base + ".safetensors"), {k: sd[k] for k in blocks[0]}, meta)
        return
    wm = {}
    for i, b in enumerate(blocks):
        name = "%s-%05d-of-%05d.safetensors" % (base, i + 1, n)
        write_safetensors(os.path.join(d, name), {k: sd[k] for k in b})
        for k in b:
            wm[k] = name
    meta = dict(extra_meta or {})
    meta["total_size"] = sum(nbytes(t) for t in sd.values())
    with open(os.path.join(d, base + ".safetensors.index.json"), "w") as f:
        f.write(json.dumps({"metadata": meta, "weight_map": wm}, indent=2, sort_keys=True) + "\n")

def save_colossal(d, sd, max_mb):
    # ColossalAI: StateDictSharder in MB, "model-00001.safetensors", total_size in MB (float).
    os.makedirs(d, exist_ok=True)
    blocks = [[]]
    size = 0.0
    for k, t in sd.items():
        mb = nbytes(t) / 1024 / 1024
        if size + mb > max_mb and len(blocks[-1]) > 0:
            blocks.append([])
            size = 0.0
        blocks[-1].append(k)
        size += mb
    wm = {}
    total = 0.0
    for i, b in enumerate(blocks):
        name = "model-%05d.safetensors" % (i + 1)
        write_safetensors(os.path.join(d, name), {k: sd[k] for k in b})
        for k in b:
            wm[k] = name
            total += nbytes(sd[k]) / 1024 / 1024
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": wm}, f, indent=2)

def save_bin_sharded(d, sd, max_bytes):
    os.makedirs(d, exist_ok=True)
    blocks = split(sd, max_bytes)
    n = len(blocks)
    wm = {}
    for i, b in enumerate(blocks):
        name = "pytorch_model-%05d-of-%05d.bin" % (i + 1, n)
        torch.save({k: sd[k] for k in b}, os.path.join(d, name))
        for k in b:
            wm[k] = name
    with open(os.path.join(d, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": sum(nbytes(t) for t in sd.values())}, "weight_map": wm}, f, indent=2)

def dump_expected(d, sd):
    os.makedirs(d, exist_ok=True)
    listing = []
    for i, (k, t) in enumerate(sd.items()):
        with open(os.path.join(d, "%d.raw" % i), "wb") as f:
            f.write(raw(t))
        listing.append([k, DT[t.dtype], list(t.shape)])
    with open(os.path.join(d, "listing.json"), "w") as f:
        json.dump(listing, f)

def model_state():
    g = torch.Generator().manual_seed(0)
    sd = {}
    sd["embed.weight"] = torch.randn(64, 32, generator=g)
    sd["layers.0.attn.qkv.weight"] = torch.randn(96, 32, generator=g).to(torch.bfloat16)
    sd["layers.0.attn.qkv.bias"] = torch.randn(96, generator=g).to(torch.float16)
    sd["layers.0.norm.weight"] = torch.ones(32)
    sd["layers.0.norm.num_batches_tracked"] = torch.tensor(7, dtype=torch.int64)
    sd["layers.1.mlp.weight"] = torch.randn(128, 32, generator=g)
    sd["layers.1.mask"] = torch.rand(16, generator=g) > 0.5
    sd["layers.1.empty"] = torch.zeros(0, 4)
    sd["head.weight"] = torch.randn(10, 32, generator=g).to(torch.float64)
    return sd
)PY";

}  // namespace ckptio::testing
