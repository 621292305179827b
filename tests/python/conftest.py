"""Shared helpers for the Python tests: seeded random tensors of every dtype."""

import json
import struct

import numpy as np
import pytest
import torch

from ckptio import _tensors

# Every safetensors dtype this torch has (all but the two F6 kinds).
TORCH_DTYPE_NAMES = sorted(_tensors.torch_dtypes())
# The ones safetensors.torch.load_file cannot read back (its _TYPES lacks them).
PACKAGE_UNREADABLE = {"F4", "F8_E8M0"}


def random_torch_tensor(rng: np.random.Generator, name: str) -> torch.Tensor:
    """Random bytes (NaNs and all) viewed as dtype `name`, rank 0 to 4, empty dimensions too."""
    dtype = _tensors.torch_dtype(name)
    rank = int(rng.integers(0, 5))
    if name == "F4":  # a 0-d float4_e2m1fn_x2 holds two values: no safetensors shape says that
        rank = max(rank, 1)
    shape = [int(rng.integers(0, 6)) for _ in range(rank)]
    if rng.random() < 0.8:  # mostly non-empty
        shape = [max(d, 1) for d in shape]
    if 0 in shape:
        return torch.empty(shape, dtype=dtype)
    itemsize = torch.empty((), dtype=dtype).element_size()
    numel = int(np.prod(shape)) if shape else 1
    data = torch.from_numpy(rng.integers(0, 256, numel * itemsize, dtype=np.uint8))
    if name == "BOOL":
        data = data % 2
    return data.view(dtype).reshape(shape)


def random_state(seed: int, dtypes=None, count=None):
    rng = np.random.default_rng(seed)
    dtypes = dtypes or TORCH_DTYPE_NAMES
    count = count or int(rng.integers(1, 8))
    names = [f"t{i}.{rng.integers(1000)}" for i in range(count)]
    return {n: random_torch_tensor(rng, dtypes[int(rng.integers(len(dtypes)))]) for n in names}


def same_bits(a, b) -> bool:
    """Equal dtype, shape and bytes (NaN payloads included)."""
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    return (a.dtype == b.dtype and a.shape == b.shape
            and torch.equal(a.contiguous().reshape(-1).view(torch.uint8),
                            b.contiguous().reshape(-1).view(torch.uint8)))


def header_of(data: bytes) -> dict:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n])


@pytest.fixture
def helpers():
    return __import__(__name__)
