"""What the torch and numpy flavours share: safe_open, and tensors to and from the core."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple, Union

from ckptio import _core, _tensors, errors

PathLike = Union[str, "os.PathLike[str]"]

# The safetensors package's framework names; ckptio reads into torch and numpy only.
_FRAMEWORKS = {"pt": "pt", "torch": "pt", "pytorch": "pt", "np": "np", "numpy": "np"}


def framework_of(framework: str) -> str:
    try:
        return _FRAMEWORKS[framework]
    except KeyError:
        raise errors.UnsupportedError(
            f"unsupported: framework {framework!r}: ckptio reads safetensors into torch (\"pt\")"
            " and numpy (\"np\")"
        ) from None


def flatten(tensors: Dict[str, Any]) -> List[Tuple[str, str, Tuple[int, ...], Any]]:
    """[(name, dtype, shape, raw)] for the core's writers; raw views keep the tensors alive."""
    return [(name,) + _tensors.to_raw(value, name) for name, value in tensors.items()]


def write_file(flat: List[Tuple[str, str, Tuple[int, ...], Any]], filename: PathLike,
               metadata: Optional[Dict[str, str]]) -> None:
    _core.save_file(os.fspath(filename), flat, metadata, True)


def serialize(flat: List[Tuple[str, str, Tuple[int, ...], Any]],
              metadata: Optional[Dict[str, str]]) -> bytes:
    return _core.serialize(flat, metadata)


def deserialize(data: Union[bytes, bytearray, memoryview], framework: str) -> Dict[str, Any]:
    if not isinstance(data, bytes):
        data = bytes(data)
    _, loaded = _core.deserialize(data)
    return {
        name: _tensors.from_raw(dtype, shape, raw, framework, name)
        for name, dtype, shape, raw in loaded
    }


def _to_device(tensor: Any, device: Union[str, int, Any]) -> Any:
    if device in ("cpu", None):
        return tensor
    return tensor.to(device)


class safe_open:  # noqa: N801 (the safetensors package's name)
    """An open safetensors file, as ``safetensors.safe_open``: validated on open, read on demand.

    Use it as a context manager; ``get_tensor`` returns a new tensor (a copy of the file's bytes
    that the caller owns), ``get_slice`` reads a part of one through the memory mapping.
    """

    def __init__(self, filename: PathLike, framework: str = "pt",
                 device: Union[str, int, Any] = "cpu") -> None:
        self._framework = framework_of(framework)
        if self._framework == "np" and device not in ("cpu", None):
            raise errors.InvalidArgumentError(
                f"invalid_argument: numpy tensors live on the cpu, not on {device!r}")
        self._device = device
        self._file = _core.SafeFile(os.fspath(filename))

    def __enter__(self) -> "safe_open":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._file.close()

    def metadata(self) -> Optional[Dict[str, str]]:
        return self._file.metadata()

    def keys(self) -> List[str]:
        """Tensor names, sorted."""
        return sorted(name for name, _, _ in self._file.tensors())

    def offset_keys(self) -> List[str]:
        """Tensor names in the order their bytes lie in the file."""
        return [name for name, _, _ in self._file.tensors()]

    def get_tensor(self, name: str) -> Any:
        _, dtype, shape = self._file.info(name)
        tensor, raw = _tensors.empty(dtype, shape, self._framework, name)
        self._file.read_into(name, raw)
        return _to_device(tensor, self._device)

    def get_tensors(self) -> Dict[str, Any]:
        """Every tensor, in file order, read with parallel preads into fresh memory."""
        return read_all(self._file, self._framework, self._device)

    def get_slice(self, name: str) -> "SafeSlice":
        _, dtype, shape = self._file.info(name)
        return SafeSlice(self._file, name, dtype, shape, self._framework, self._device)


class SafeSlice:
    """A tensor not read yet: ``get_shape()``, ``get_dtype()`` and indexing (``s[1:, ::2]``)."""

    def __init__(self, file: Any, name: str, dtype: str, shape: List[int], framework: str,
                 device: Any) -> None:
        self._file, self._name, self._dtype, self._shape = file, name, dtype, list(shape)
        self._framework, self._device = framework, device

    def get_shape(self) -> List[int]:
        return list(self._shape)

    def get_dtype(self) -> str:
        return self._dtype

    def __getitem__(self, index: Any) -> Any:
        # Index a zero-copy view of the mapping, then copy only the selected elements.
        whole = _tensors.from_raw(self._dtype, self._shape, self._file.tensor(self._name),
                                  self._framework, self._name)
        part = whole[index]
        if self._framework == "pt":
            import torch

            return _to_device(part.clone(memory_format=torch.contiguous_format), self._device)
        import numpy as np

        return np.array(part, copy=True, order="C")


def read_all(file: Any, framework: str, device: Any = "cpu") -> Dict[str, Any]:
    described = file.tensors()  # in data order, as the safetensors package returns them
    names: List[str] = []
    raws: List[Any] = []
    result: Dict[str, Any] = {}
    for name, dtype, shape in described:
        tensor, raw = _tensors.empty(dtype, shape, framework, name)
        result[name] = tensor
        names.append(name)
        raws.append(raw)
    file.read_many_into(names, raws)
    if device not in ("cpu", None):
        result = {name: _to_device(t, device) for name, t in result.items()}
    return result


def load_file(filename: PathLike, framework: str, device: Any = "cpu") -> Dict[str, Any]:
    file = _core.SafeFile(os.fspath(filename))
    try:
        return read_all(file, framework, device)
    finally:
        file.close()

