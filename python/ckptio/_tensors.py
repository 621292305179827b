"""How tensors cross into and out of ckptio's core: as (dtype name, shape, raw bytes).

``raw`` is a 1-D uint8 CPU array aliasing the tensor's memory, so nothing is copied either way
(see python/src/tensor_bridge.h). The dtype names are safetensors' ("F32", "BF16", "F8_E4M3", ...)
and the shape is the one a safetensors header holds: for F4, whose torch type packs two values
per byte (``torch.float4_e2m1fn_x2``), the last dimension counts 4-bit values, twice torch's.

torch is imported only when a torch tensor is asked for; numpy alone is enough otherwise.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence, Tuple

import numpy as np

from ckptio import errors

# safetensors name -> numpy dtype, for every dtype numpy has natively.
NUMPY_DTYPES = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype(np.uint8),
    "I8": np.dtype(np.int8),
    "I16": np.dtype(np.int16),
    "U16": np.dtype(np.uint16),
    "I32": np.dtype(np.int32),
    "U32": np.dtype(np.uint32),
    "I64": np.dtype(np.int64),
    "U64": np.dtype(np.uint64),
    "F16": np.dtype(np.float16),
    "F32": np.dtype(np.float32),
    "F64": np.dtype(np.float64),
    "C64": np.dtype(np.complex64),
}
_NUMPY_NAMES = {dtype: name for name, dtype in NUMPY_DTYPES.items()}

# safetensors name -> torch attribute; torch versions lacking one simply do not map it.
_TORCH_ATTRS = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "I16": "int16",
    "U16": "uint16",
    "I32": "int32",
    "U32": "uint32",
    "I64": "int64",
    "U64": "uint64",
    "F16": "float16",
    "BF16": "bfloat16",
    "F32": "float32",
    "F64": "float64",
    "C64": "complex64",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "F4": "float4_e2m1fn_x2",
}
# Values packed per torch element (F4 in torch.float4_e2m1fn_x2: two).
_TORCH_PACKING = {"F4": 2}

Shape = Tuple[int, ...]


@functools.lru_cache(maxsize=None)
def torch_dtypes() -> dict:
    """safetensors name -> torch.dtype, for the dtypes this torch has."""
    import torch

    return {
        name: getattr(torch, attr) for name, attr in _TORCH_ATTRS.items() if hasattr(torch, attr)
    }


@functools.lru_cache(maxsize=None)
def _torch_names() -> dict:
    return {dtype: name for name, dtype in torch_dtypes().items()}


def torch_dtype(name: str, tensor_name: str = "") -> Any:
    """The torch.dtype of a safetensors dtype; UnsupportedError when this torch has none."""
    try:
        return torch_dtypes()[name]
    except KeyError:
        raise errors.UnsupportedError(
            f"unsupported: {_which(tensor_name)}dtype {name} has no dtype in torch {_version()}"
        ) from None


def numpy_dtype(name: str, tensor_name: str = "") -> np.dtype:
    """The numpy dtype of a safetensors dtype; UnsupportedError when numpy has none."""
    try:
        return NUMPY_DTYPES[name]
    except KeyError:
        raise errors.UnsupportedError(
            f"unsupported: {_which(tensor_name)}dtype {name} has no numpy dtype (use torch)"
        ) from None


def _version() -> str:
    import torch

    return torch.__version__


def _which(tensor_name: str) -> str:
    return f"tensor '{tensor_name}': " if tensor_name else ""


def safetensors_dtype(dtype: Any) -> str:
    """The safetensors name of a torch.dtype or numpy dtype."""
    if isinstance(dtype, np.dtype) or (isinstance(dtype, type) and issubclass(dtype, np.generic)):
        try:
            return _NUMPY_NAMES[np.dtype(dtype)]
        except KeyError:
            raise errors.UnsupportedError(
                f"unsupported: numpy dtype {np.dtype(dtype)} has no safetensors dtype"
            ) from None
    try:
        return _torch_names()[dtype]
    except KeyError:
        raise errors.UnsupportedError(
            f"unsupported: torch dtype {dtype} has no safetensors dtype"
        ) from None


def is_torch_tensor(value: Any) -> bool:
    torch = _torch_if_imported()
    return torch is not None and isinstance(value, torch.Tensor)


def _torch_if_imported():
    import sys

    return sys.modules.get("torch")


def to_raw(tensor: Any, tensor_name: str = "") -> Tuple[str, Shape, Any]:
    """(dtype name, safetensors shape, 1-D uint8 view) of a contiguous CPU tensor or array.

    Views only: the raw array aliases the tensor's memory. A torch tensor on another device is
    copied to the CPU first (as the safetensors package does).
    """
    if isinstance(tensor, np.generic):
        tensor = np.asarray(tensor)
    if isinstance(tensor, np.ndarray):
        name = safetensors_dtype(tensor.dtype)
        if not tensor.flags.c_contiguous:
            raise ValueError("numpy array is not C-contiguous")
        if tensor.dtype.byteorder == ">":
            tensor = tensor.byteswap().view(tensor.dtype.newbyteorder("<"))
        return name, tuple(tensor.shape), tensor.reshape(-1).view(np.uint8)
    import torch

    name = safetensors_dtype(tensor.dtype)
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.to("cpu")
    shape = tuple(t.shape)
    packing = _TORCH_PACKING.get(name)
    if packing:
        if not shape:
            raise errors.InvalidArgumentError(
                f"invalid_argument: {_which(tensor_name)}a 0-d {t.dtype} tensor holds {packing}"
                f" {name} values, which a safetensors shape cannot describe")
        shape = shape[:-1] + (shape[-1] * packing,)
    if t.numel() == 0:  # no bytes to alias, and an empty tensor's strides may not allow a view
        return name, shape, torch.empty(0, dtype=torch.uint8)
    return name, shape, t.reshape(-1).view(torch.uint8)


def framework_shape(name: str, shape: Sequence[int], framework: str) -> Shape:
    """The shape a torch tensor has for a safetensors shape (differs for packed F4)."""
    shape = tuple(shape)
    packing = _TORCH_PACKING.get(name) if framework == "pt" else None
    if packing and shape:
        shape = shape[:-1] + (shape[-1] // packing,)
    return shape


def empty(name: str, shape: Sequence[int], framework: str, tensor_name: str = "") -> Any:
    """A new uninitialised tensor/array for a safetensors dtype and shape, and its raw view."""
    if framework == "pt":
        import torch

        t = torch.empty(framework_shape(name, shape, "pt"), dtype=torch_dtype(name, tensor_name))
        return t, t.reshape(-1).view(torch.uint8)
    a = np.empty(tuple(shape), dtype=numpy_dtype(name, tensor_name))
    return a, a.reshape(-1).view(np.uint8)


def from_raw(name: str, shape: Sequence[int], raw: Any, framework: str, tensor_name: str = ""):
    """The tensor/array viewing ``raw`` (no copy) as dtype ``name`` and safetensors ``shape``.

    ``raw`` is a 1-D uint8 numpy array or torch tensor; a read-only numpy array gives a torch
    tensor that must not be written to (torch cannot mark tensors read-only).
    """
    if framework == "pt":
        import torch

        if isinstance(raw, np.ndarray):
            if raw.flags.writeable:
                raw = torch.from_numpy(raw)
            else:
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    raw = torch.from_numpy(raw)
        dtype = torch_dtype(name, tensor_name)
        return raw.view(dtype).reshape(framework_shape(name, shape, "pt"))
    if framework in ("np", "numpy"):
        if not isinstance(raw, np.ndarray):
            raw = raw.numpy()
        return raw.view(numpy_dtype(name, tensor_name)).reshape(tuple(shape))
    raise ValueError(f"framework {framework!r} is not supported (\"pt\" or \"np\")")
