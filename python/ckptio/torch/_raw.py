"""torch.Tensor <-> (dtype name, shape, raw uint8 bytes), the form tensors take to cross into the core.

Views only: a contiguous CPU tensor crosses without a copy, and tensors come back as views of the
core's memory (a heap buffer or a file mapping the returned tensor keeps alive).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

_TO_NAME = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
    torch.complex64: "C64",
}
for _attr, _name in (
    ("uint16", "U16"),
    ("uint32", "U32"),
    ("uint64", "U64"),
    ("float8_e4m3fn", "F8_E4M3"),
    ("float8_e5m2", "F8_E5M2"),
    ("float8_e4m3fnuz", "F8_E4M3FNUZ"),
    ("float8_e5m2fnuz", "F8_E5M2FNUZ"),
    ("float8_e8m0fnu", "F8_E8M0"),
):
    if hasattr(torch, _attr):
        _TO_NAME[getattr(torch, _attr)] = _name
_FROM_NAME = {name: dtype for dtype, name in _TO_NAME.items()}


def dtype_name(dtype: torch.dtype) -> str:
    try:
        return _TO_NAME[dtype]
    except KeyError:
        raise TypeError(f"ckptio cannot store tensors of dtype {dtype}") from None


def torch_dtype(name: str) -> torch.dtype:
    try:
        return _FROM_NAME[name]
    except KeyError:
        raise TypeError(f"dtype {name} has no torch equivalent") from None


def contiguous_cpu(t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    if t.device.type != "cpu":
        t = t.to("cpu")
    return t.contiguous()


def to_raw(t: torch.Tensor) -> tuple[str, list[int], np.ndarray]:
    """(dtype, shape, bytes); the bytes alias `t` when it is a contiguous CPU tensor."""
    c = contiguous_cpu(t)
    return dtype_name(c.dtype), list(c.shape), c.reshape(-1).view(torch.uint8).numpy()


def writable_raw(t: torch.Tensor) -> np.ndarray:
    """The bytes of a contiguous CPU tensor, writable, aliasing it."""
    return t.detach().reshape(-1).view(torch.uint8).numpy()


def from_raw(dtype: str, shape: Any, raw: np.ndarray) -> torch.Tensor:
    """A tensor viewing `raw` (no copy). Read-only mappings give tensors that must not be written."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about non-writable arrays (file mappings)
        flat = torch.from_numpy(raw)
    return flat.view(torch_dtype(dtype)).reshape(list(shape))
