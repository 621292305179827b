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
               metadata: Optional[Dict[str, str]], sync: bool, direct_io: bool = False) -> None:
    _core.save_file(os.fspath(filename), flat, metadata, sync, direct_io)


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
                 device: Union[str, int, Any] = "cpu", *, backend: str = "mmap") -> None:
        self._framework = framework_of(framework)
        if self._framework == "np" and device not in ("cpu", None):
            raise errors.InvalidArgumentError(
                f"invalid_argument: numpy tensors live on the cpu, not on {device!r}")
        self._device = device
        self._backend = backend_of(backend)
        self._file = _core.SafeFile(os.fspath(filename))
        self._mapping: Any = None

    def __enter__(self) -> "safe_open":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._file.close()
        self._mapping = None

    def metadata(self) -> Optional[Dict[str, str]]:
        return self._file.metadata()

    def keys(self) -> List[str]:
        """Tensor names, sorted."""
        return sorted(name for name, _, _ in self._file.tensors())

    def offset_keys(self) -> List[str]:
        """Tensor names in the order their bytes lie in the file."""
        return [name for name, _, _ in self._file.tensors()]

    def get_tensor(self, name: str) -> Any:
        if self._backend == "mmap":
            if self._mapping is None:
                self._mapping = map_copy_on_write(self._file)
            return _to_device(mapped_tensor(self._file, self._mapping, name, self._framework),
                              self._device)
        _, dtype, shape = self._file.info(name)
        tensor, raw = _tensors.empty(dtype, shape, self._framework, name)
        self._file.read_into(name, raw)
        return _to_device(tensor, self._device)

    def get_tensors(self) -> Dict[str, Any]:
        """Every tensor, in file order."""
        return read_all(self._file, self._framework, self._device, self._backend)

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


def backend_of(backend: str) -> str:
    if backend not in ("mmap", "pread"):
        raise errors.InvalidArgumentError(
            f"invalid_argument: backend {backend!r}: \"mmap\" or \"pread\"")
    return backend


def map_copy_on_write(file: Any) -> Any:
    """The file as a private writable mapping (a uint8 numpy array): tensors that view it are
    read lazily from the page cache, and writes to them copy the page instead of reaching the
    file (as the safetensors package maps files)."""
    import mmap

    import numpy as np

    with open(file.path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size != file.file_size:
            raise errors.CorruptError(
                f"corrupt: '{file.path}': the file changed size while being opened"
                f" ({file.file_size} then {size} bytes)")
        mapping = mmap.mmap(f.fileno(), size, flags=mmap.MAP_PRIVATE,
                            prot=mmap.PROT_READ | mmap.PROT_WRITE)
    return np.frombuffer(mapping, dtype=np.uint8)


def mapped_tensor(file: Any, mapping: Any, name: str, framework: str) -> Any:
    _, dtype, shape = file.info(name)
    begin, end = file.byte_range(name)
    item_bytes = max(_core.dtype_bits(dtype) // 8, 1)
    if begin % item_bytes:  # a misaligned tensor (not from the reference writer): copy it
        tensor, raw = _tensors.empty(dtype, shape, framework, name)
        if framework == "pt":
            import torch

            raw.copy_(torch.from_numpy(mapping[begin:end]))
        else:
            raw[:] = mapping[begin:end]
        return tensor
    return _tensors.from_raw(dtype, shape, mapping[begin:end], framework, name)


def read_all(file: Any, framework: str, device: Any = "cpu", backend: str = "mmap") -> Dict[str, Any]:
    described = file.tensors()  # in data order, as the safetensors package returns them
    result: Dict[str, Any] = {}
    if backend == "mmap":
        mapping = map_copy_on_write(file)
        for name, _, _ in described:
            result[name] = mapped_tensor(file, mapping, name, framework)
    else:
        names: List[str] = []
        raws: List[Any] = []
        for name, dtype, shape in described:
            tensor, raw = _tensors.empty(dtype, shape, framework, name)
            result[name] = tensor
            names.append(name)
            raws.append(raw)
        file.read_many_into(names, raws)
    if device not in ("cpu", None):
        result = {name: _to_device(t, device) for name, t in result.items()}
    return result


def load_file(filename: PathLike, framework: str, device: Any = "cpu",
              backend: str = "mmap") -> Dict[str, Any]:
    backend = backend_of(backend)
    file = _core.SafeFile(os.fspath(filename))
    try:
        return read_all(file, framework, device, backend)
    finally:
        file.close()
