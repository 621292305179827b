"""safetensors files for PyTorch, with the ``safetensors.torch`` API and the same bytes on disk.

``save_file``/``load_file``/``save``/``load``/``save_model``/``load_model`` and ``safe_open``
behave as the ``safetensors`` package's do (same files, byte for byte; same exceptions where it
raises ``ValueError``/``RuntimeError``; ckptio's own :mod:`ckptio.errors` where it raises
``SafetensorError``). Differences: ``save_file`` is crash-safe (temp file, fsync, rename), loading
reads with parallel ``pread`` into fresh memory, and every dtype of the format is read and written
(BF16, the five F8 kinds, F4 as ``torch.float4_e2m1fn_x2``). numpy: :mod:`ckptio.safetensors.numpy`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set, Tuple, Union

from ckptio.safetensors import _common
from ckptio.safetensors._common import PathLike, SafeSlice, safe_open

if TYPE_CHECKING:
    import torch

__all__ = [
    "SafeSlice",
    "load",
    "load_file",
    "load_model",
    "safe_open",
    "save",
    "save_file",
    "save_model",
]


def save_file(tensors: Dict[str, "torch.Tensor"], filename: PathLike,
              metadata: Optional[Dict[str, str]] = None, *, sync: bool = True,
              direct_io: bool = False) -> None:
    """Writes ``tensors`` to ``filename`` (crash-safe: it appears complete or not at all).

    ``sync=False`` skips the fsyncs (as the safetensors package does): faster, but after a power
    loss the file may be missing or incomplete. A crash of the process alone never leaves a partial
    file under its name.

    ``direct_io=True`` writes the file's 4 KiB-aligned middle with O_DIRECT (through an aligned
    staging buffer), bypassing the page cache: the bytes go to the device as they are written, and
    saving does not fill memory with cached pages of the file. Where allocating page-cache memory
    is slow (virtual machines, memory pressure) this is the faster way; on a file system without
    O_DIRECT the ordinary path is used. The file's bytes are the same either way."""
    _common.write_file(_flatten(tensors), filename, metadata, sync, direct_io)


def save(tensors: Dict[str, "torch.Tensor"], metadata: Optional[Dict[str, str]] = None) -> bytes:
    """The bytes ``save_file`` would write."""
    return _common.serialize(_flatten(tensors), metadata)


def load_file(filename: PathLike, device: Union[str, int, Any] = "cpu", *,
              backend: str = "mmap") -> Dict[str, "torch.Tensor"]:
    """Every tensor of the file, in file order (then moved to ``device``).

    ``backend="mmap"``: the tensors view a private copy-on-write mapping of the file, read lazily
    from the page cache (writing to them never changes the file), as the safetensors package.
    ``backend="pread"``: the bytes are read up front with parallel preads into new memory.
    """
    return _common.load_file(filename, "pt", device, backend)


def load(data: bytes) -> Dict[str, "torch.Tensor"]:
    """The tensors of a file held in ``data``."""
    return _common.deserialize(data, "pt")


def save_model(model: "torch.nn.Module", filename: PathLike,
               metadata: Optional[Dict[str, str]] = None, force_contiguous: bool = True) -> None:
    """Saves ``model.state_dict()`` keeping one name per shared storage; each dropped name is
    recorded in the metadata as ``{dropped: kept}`` (as ``safetensors.torch.save_model``)."""
    state_dict = model.state_dict()
    to_removes = _remove_duplicate_names(state_dict)
    for kept_name, to_remove_group in to_removes.items():
        for to_remove in to_remove_group:
            if metadata is None:
                metadata = {}
            if to_remove not in metadata:
                metadata[to_remove] = kept_name
            del state_dict[to_remove]
    if force_contiguous:
        state_dict = {k: v.contiguous() for k, v in state_dict.items()}
    try:
        save_file(state_dict, filename, metadata=metadata)
    except ValueError as e:
        raise ValueError(str(e) + " Or use save_model(..., force_contiguous=True), read the docs"
                         " for potential caveats.") from None


def load_model(model: "torch.nn.Module", filename: PathLike, strict: bool = True,
               device: Union[str, int, Any] = "cpu", *,
               backend: str = "mmap") -> Tuple[List[str], List[str]]:
    """Loads a file into ``model``; names the file lacks because they shared storage with a kept
    name are not missing. Returns ``(missing, unexpected)``; raises RuntimeError when strict."""
    state_dict = load_file(filename, device=device, backend=backend)
    model_state_dict = model.state_dict()
    to_removes = _remove_duplicate_names(model_state_dict, preferred_names=state_dict.keys())
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    missing = set(missing)
    for to_remove_group in to_removes.values():
        for to_remove in to_remove_group:
            if to_remove not in missing:
                unexpected.append(to_remove)
            else:
                missing.remove(to_remove)
    if strict and (missing or unexpected):
        missing_keys = ", ".join([f'"{k}"' for k in sorted(missing)])
        unexpected_keys = ", ".join([f'"{k}"' for k in sorted(unexpected)])
        error = f"Error(s) in loading state_dict for {model.__class__.__name__}:"
        if missing:
            error += f"\n    Missing key(s) in state_dict: {missing_keys}"
        if unexpected:
            error += f"\n    Unexpected key(s) in state_dict: {unexpected_keys}"
        raise RuntimeError(error)
    return missing, unexpected


# The checks below follow safetensors.torch so that the same inputs raise the same exceptions.

def _flatten(tensors: Dict[str, "torch.Tensor"]) -> List[Tuple[str, str, Tuple[int, ...], Any]]:
    import torch

    if not isinstance(tensors, dict):
        raise ValueError(f"Expected a dict of [str, torch.Tensor] but received {type(tensors)}")
    sparse = []
    for k, v in tensors.items():
        if not isinstance(v, torch.Tensor):
            raise ValueError(f"Key `{k}` is invalid, expected torch.Tensor but received {type(v)}")
        if v.layout != torch.strided:
            sparse.append(k)
    if sparse:
        raise ValueError(
            f"You are trying to save a sparse tensors: `{sparse}` which this library does not"
            " support. You can make it a dense tensor before saving with `.to_dense()` but be"
            " aware this might make a much larger file than needed.")
    failing = [names for names in _find_shared_tensors(tensors) if len(names) > 1]
    if failing:
        raise RuntimeError(
            f"Some tensors share memory, this will lead to duplicate memory on disk and potential"
            f" differences when loading them again: {failing}. A potential way to correctly save"
            " your model is to use `save_model`. More information at"
            " https://huggingface.co/docs/safetensors/torch_shared_tensors")
    for k, v in tensors.items():
        if not v.is_contiguous():
            raise ValueError(
                f"You are trying to save a non contiguous tensor: `{k}` which is not allowed. It"
                " either means you are trying to save tensors which are reference of each other"
                " in which case it's recommended to save only the full tensors, and reslice at"
                " load time, or simply call `.contiguous()` on your tensor to pack it before"
                " saving.")
    return _common.flatten(tensors)


def _storage_ptr(tensor: "torch.Tensor") -> int:
    try:
        return tensor.untyped_storage().data_ptr()
    except NotImplementedError:  # meta tensors
        return 0


def _storage_size(tensor: "torch.Tensor") -> int:
    return tensor.untyped_storage().nbytes()


def _end_ptr(tensor: "torch.Tensor") -> int:
    if tensor.nelement():
        return tensor.view(-1)[-1].data_ptr() + tensor.element_size()
    return tensor.data_ptr()


def _filter_shared_not_shared(groups: List[Set[str]], state_dict: Dict[str, "torch.Tensor"]
                              ) -> List[Set[str]]:
    # Names on one storage whose byte ranges do not overlap are not really shared.
    filtered: List[Set[str]] = []
    for shared in groups:
        if len(shared) < 2:
            filtered.append(shared)
            continue
        areas = sorted((state_dict[n].data_ptr(), _end_ptr(state_dict[n]), n) for n in shared)
        _, last_stop, last_name = areas[0]
        filtered.append({last_name})
        for start, stop, name in areas[1:]:
            if start >= last_stop:
                filtered.append({name})
            else:
                filtered[-1].add(name)
            last_stop = stop
    return filtered


def _find_shared_tensors(state_dict: Dict[str, "torch.Tensor"]) -> List[Set[str]]:
    import torch

    groups: Dict[Any, Set[str]] = defaultdict(set)
    for k, v in state_dict.items():
        if v.device != torch.device("meta") and _storage_ptr(v) != 0 and _storage_size(v) != 0:
            groups[(v.device, _storage_ptr(v), _storage_size(v))].add(k)
    return _filter_shared_not_shared(list(sorted(groups.values())), state_dict)


def _is_complete(tensor: "torch.Tensor") -> bool:
    return (tensor.data_ptr() == _storage_ptr(tensor)
            and tensor.nelement() * tensor.element_size() == _storage_size(tensor))


def _remove_duplicate_names(state_dict: Dict[str, "torch.Tensor"], *,
                            preferred_names: Optional[Any] = None,
                            discard_names: Optional[Any] = None) -> Dict[str, List[str]]:
    preferred_set = set(preferred_names or [])
    discard_set = set(discard_names or [])
    to_remove: Dict[str, List[str]] = defaultdict(list)
    for shared in _find_shared_tensors(state_dict):
        complete = {name for name in shared if _is_complete(state_dict[name])}
        if not complete:
            raise RuntimeError(
                "Error while trying to find names to remove to save state dict, but found no"
                f" suitable name to keep for saving amongst: {shared}. None is covering the entire"
                " storage.Refusing to save/load the model since you could be storing much more"
                " memory than needed. Please refer to"
                " https://huggingface.co/docs/safetensors/torch_shared_tensors for more"
                " information. Or open an issue.")
        keep_name = sorted(complete)[0]
        preferred = complete.difference(discard_set)
        if preferred:
            keep_name = sorted(preferred)[0]
        if preferred_set:
            preferred = preferred_set.intersection(complete)
            if preferred:
                keep_name = sorted(preferred)[0]
        for name in sorted(shared):
            if name != keep_name:
                to_remove[keep_name].append(name)
    return to_remove
