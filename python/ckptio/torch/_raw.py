"""Thin torch-only wrappers over ckptio._tensors (the bridge's Python side) for this package."""

from __future__ import annotations

from typing import Any, Union

import torch

from ckptio import _core, _tensors


def dtype_name(dtype: torch.dtype) -> str:
    return _tensors.safetensors_dtype(dtype)


def torch_dtype(name: str) -> torch.dtype:
    return _tensors.torch_dtype(name)


def contiguous_cpu(t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    if t.device.type != "cpu":
        t = t.to("cpu")
    return t.contiguous()


def to_raw(t: torch.Tensor) -> tuple:
    """(dtype, safetensors shape, uint8 view); the view aliases `t` when it is contiguous on the CPU
    (otherwise it views a contiguous copy, which the caller keeps alive with the triple)."""
    return _tensors.to_raw(t)


def writable_raw(t: torch.Tensor) -> Any:
    """The bytes of a contiguous CPU tensor, writable, aliasing it."""
    return t.detach().reshape(-1).view(torch.uint8)


def from_raw(dtype: str, shape: Any, raw: Any) -> torch.Tensor:
    """A tensor viewing `raw` (no copy); one over a read-only file mapping must not be written."""
    return _tensors.from_raw(dtype, shape, raw, "pt")


def size_bytes(size: Union[str, int]) -> int:
    """A shard size as the C++ options take it: an int of bytes as is, a string ("5GB" = 5*10^9,
    "2GiB" = 2*2^30, "1000") parsed the way huggingface_hub does."""
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    return _core.parse_size(str(size))
