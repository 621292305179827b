"""safetensors files for numpy, with the ``safetensors.numpy`` API and the same bytes on disk.

numpy has no BF16, F8, F4 or F6 dtype: files holding those raise
:class:`ckptio.errors.UnsupportedError` naming the tensor (read them with :mod:`ckptio.safetensors`
into torch).
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from ckptio.safetensors import _common
from ckptio.safetensors._common import PathLike

__all__ = ["load", "load_file", "save", "save_file"]


def save_file(tensor_dict: Dict[str, np.ndarray], filename: PathLike,
              metadata: Optional[Dict[str, str]] = None, *, sync: bool = True) -> None:
    """Writes the arrays to ``filename`` (crash-safe: it appears complete or not at all).

    ``sync=False`` skips the fsyncs (as the safetensors package does): faster, but after a power
    loss the file may be missing or incomplete. A crash of the process alone never leaves a partial
    file under its name."""
    _common.write_file(_common.flatten(tensor_dict), filename, metadata, sync)


def save(tensor_dict: Dict[str, np.ndarray], metadata: Optional[Dict[str, str]] = None) -> bytes:
    """The bytes ``save_file`` would write."""
    return _common.serialize(_common.flatten(tensor_dict), metadata)


def load_file(filename: PathLike, *, backend: str = "mmap") -> Dict[str, np.ndarray]:
    """Every array of the file, in file order: views of a copy-on-write mapping
    (``backend="mmap"``) or new memory filled with parallel preads (``backend="pread"``)."""
    return _common.load_file(filename, "np", "cpu", backend)


def load(data: bytes) -> Dict[str, np.ndarray]:
    """The arrays of a file held in ``data``."""
    return _common.deserialize(data, "np")
