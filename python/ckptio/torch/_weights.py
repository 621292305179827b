"""Weights in and out: load_checkpoint (any source into a module), torch_load (torch.load without
running code), save_sharded (the save_pretrained folder layout)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Optional, Sequence, Union

import torch

from ckptio import _core
from ckptio.torch._raw import contiguous_cpu, dtype_name, from_raw, size_bytes, to_raw, torch_dtype

PathLike = Union[str, os.PathLike]


def _rename_pairs(rename_keys: Union[None, Mapping[str, str], Sequence[tuple[str, str]]]) -> list:
    if rename_keys is None:
        return []
    items = rename_keys.items() if isinstance(rename_keys, Mapping) else rename_keys
    return [(str(a), str(b)) for a, b in items]


def load_checkpoint(
    model: Any,
    source: PathLike,
    strict: bool = True,
    rename_keys: Union[None, Mapping[str, str], Sequence[tuple[str, str]]] = None,
    dtype: Optional[torch.dtype] = None,
    *,
    weights: str = "auto",
    allow_pickle: bool = True,
    allow_narrowing: bool = False,
):
    """Loads weights from `source` into `model` (an nn.Module or a state dict of tensors) in place.

    `source`: a .safetensors / .pt / .bin file, a sharded folder or its index, a training
    checkpoint folder (ckptio's or Open-Sora's; `weights` picks "ema", "model" or "auto": EMA when
    present), or a Hugging Face Hub source written "hf://org/name[@revision][/path]" (through the
    huggingface_hub cache; only this form reaches the network: a plain path that does not exist is
    ckptio.errors.NotFoundError, a FileNotFoundError). `rename_keys` rewrites checkpoint-name
    prefixes before matching. `dtype` first casts the model's floating
    tensors; checkpoint tensors of another float dtype are converted as they are read. Without
    `dtype`, a tensor is converted only when no value changes (F16 -> F32, say): loading F32 weights
    into a BF16 model needs `allow_narrowing=True` (asking for `dtype` is that consent too); a
    finite value that would overflow the target is a MismatchError either way. Returns
    (missing_keys, unexpected_keys) like load_state_dict; strict=True raises
    ckptio.errors.MismatchError listing every problem before any weight is written. With
    model=None, returns the checkpoint's tensors as a dict (converted to `dtype` when given).
    """
    rename = _rename_pairs(rename_keys)
    if model is None:
        tensors, _ = _core.load_all(
            os.fspath(source), rename, None if dtype is None else dtype_name(dtype), weights, allow_pickle)
        return {name: from_raw(dt, shape, raw) for name, dt, shape, raw in tensors}
    if dtype is not None and isinstance(model, torch.nn.Module):
        model.to(dtype)
    state = model.state_dict() if isinstance(model, torch.nn.Module) else model
    targets, copy_back = [], []
    for name, t in state.items():
        if dtype is not None and not isinstance(model, torch.nn.Module) and t.is_floating_point():
            raise ValueError("dtype applies to modules; cast the state dict's tensors yourself")
        dst = t.detach()
        if not (dst.is_contiguous() and dst.device.type == "cpu"):
            staged = contiguous_cpu(dst).clone()
            copy_back.append((dst, staged))
            dst = staged
        name_, shape_, raw_ = to_raw(dst)
        targets.append((str(name), name_, list(shape_), raw_))
    report = _core.load_into(os.fspath(source), targets, strict, rename, weights, allow_pickle,
                             allow_narrowing or dtype is not None)
    with torch.no_grad():
        for dst, staged in copy_back:
            dst.copy_(staged)
    return torch.nn.modules.module._IncompatibleKeys(list(report["missing"]), list(report["unexpected"]))


def _rebuild(value: Any, storages: list) -> Any:
    if isinstance(value, _core.TorchTensorRef):
        base = storages[value.storage]
        if torch_dtype(value.dtype) != base.dtype:
            base = base.view(torch_dtype(value.dtype))
        t = base.as_strided(list(value.sizes), list(value.strides), value.offset)
        if value.is_parameter:
            return torch.nn.Parameter(t, requires_grad=value.requires_grad)
        return t.requires_grad_(value.requires_grad) if value.requires_grad else t
    if isinstance(value, dict):
        return {_rebuild(k, storages): _rebuild(v, storages) for k, v in value.items()}
    if isinstance(value, list):
        return [_rebuild(v, storages) for v in value]
    if isinstance(value, tuple):
        return tuple(_rebuild(v, storages) for v in value)
    return value


def torch_load(path: PathLike, key: Optional[str] = None) -> Any:
    """What torch.load(path, weights_only=True) returns, read by ckptio's restricted unpickler: no
    code from the file ever runs (a global outside the allow-list raises ckptio.errors.UnsafeError).

    Tensors that shared a storage in the file share memory again; nn.Parameters come back as
    Parameters. Containers come back as dict / list / tuple (OrderedDict as dict, torch.Size as
    tuple, torch.device and dtypes as strings). `key` picks a sub-object by dotted path
    ("state_dict", "optimizer.state.0.exp_avg").
    """
    root, storages = _core.torch_load(os.fspath(path), key or "")
    flat = [from_raw(dtype, [numel], raw) for dtype, numel, raw in storages]
    return _rebuild(root, flat)


def save_sharded(
    state_dict: Mapping[str, torch.Tensor],
    folder: PathLike,
    max_shard_size: Union[str, int] = "5GB",
    *,
    base_name: str = "model",
    metadata: Optional[Mapping[str, str]] = None,
    sync: bool = True,
) -> dict:
    """Writes `state_dict` as transformers' save_pretrained lays it out: model.safetensors, or
    model-0000k-of-0000N.safetensors shards plus model.safetensors.index.json past max_shard_size
    ("5GB" = 5*10^9 bytes, "2GiB", or an int of bytes). Crash-safe: the index is written last and
    stale shards of an earlier save are removed after it. Returns the shard names, index, total size.
    `sync=False` skips the fsyncs (tests and benchmarks only).
    """
    if isinstance(state_dict, torch.nn.Module):
        state_dict = state_dict.state_dict()
    tensors = [(str(name), *to_raw(t)) for name, t in state_dict.items()]
    return _core.save_sharded(
        os.fspath(folder), tensors, size_bytes(max_shard_size), base_name, dict(metadata or {}), sync)
