"""Distributed checkpoints for PyTorch jobs: every rank saves what it holds, any number of ranks
load any part of it back.

``save(state_dict, checkpoint_dir, process_group=None)`` and ``load(state_dict, checkpoint_dir,
process_group=None)`` mirror ``torch.distributed.checkpoint.save`` / ``load``: collective over the
group, state dicts flattened to dotted keys, ``load`` filling the given state dict in place.
Values: plain tensors (replicated: the same on every rank), DTensors (any mesh, ``Shard`` /
``Replicate`` placements: each rank saves its local box once), :class:`FlatShard` (ZeRO
partitions: a range of the flattened tensor, padding never written), objects with
``state_dict()`` / ``load_state_dict()``, and plain data (None, bool, int, float, str, lists and
dicts of them) stored as JSON inside the checkpoint, never pickled.

``load`` also reads PyTorch DCP folders (``torch.distributed.checkpoint.save`` with its default
``FileSystemWriter``) saved on any number of ranks. See docs/python-dist.md.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import threading
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from ckptio import _core, _tensors, errors
from ckptio.dist._checkpoint_io import CheckpointIO
from ckptio.dist._comm import TorchCommunicator
from ckptio.dist._state import FlatShard, check_plain, dtensor_type, flatten, zero_partition

__all__ = ["FlatShard", "zero_partition", "save", "load", "async_save", "TorchCommunicator",
           "CheckpointIO", "PLAIN_DATA_KEY"]

# The checkpoint tensor (U8, replicated) holding the state dicts' plain data as JSON.
PLAIN_DATA_KEY = "__ckptio_plain_data__"
_PLAIN_FORMAT = "ckptio.plain_data"


# --- what this rank holds of each value ------------------------------------------------------

def _spec(name: str, dtype: str, global_shape, placement: str = "replicated",
          offsets=(), local_shape=(), begin: int = 0, length: int = 0) -> tuple:
    return (name, dtype, [int(d) for d in global_shape], placement, [int(o) for o in offsets],
            [int(d) for d in local_shape], int(begin), int(length))


def _dtensor_box(key: str, dt: Any) -> Tuple[Optional[tuple], Any, bool]:
    """(box spec or None for replicated, local tensor, whether this rank saves it).

    A rank whose mesh coordinate is not 0 along a ``Replicate`` mesh dimension holds a copy of a
    box another rank saves, so it saves nothing (it still loads its box)."""
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    placements = list(dt.placements)
    if any(p.is_partial() for p in placements):
        placements = [Replicate() if p.is_partial() else p for p in placements]
        dt = dt.redistribute(dt.device_mesh, placements)
    local = dt._local_tensor if hasattr(dt, "_local_tensor") else dt.to_local()
    dtype = _tensors.safetensors_dtype(dt.dtype)
    if all(p.is_replicate() for p in placements) or dt.numel() == 0:
        return None, local, True
    box = _cached_shard_box(tuple(dt.shape), dt.device_mesh, placements)
    if box is None:
        box = compute_local_shape_and_global_offset(tuple(dt.shape), dt.device_mesh, placements)
    local_shape, offsets = box
    if tuple(local.shape) != tuple(local_shape):
        raise errors.UnsupportedError(
            f"unsupported: DTensor '{key}': local shape {tuple(local.shape)} is not the box"
            f" {tuple(local_shape)} its placements give")
    coord = dt.device_mesh.get_coordinate() or []
    saves = all(c == 0 for c, p in zip(coord, placements) if p.is_replicate())
    saves = saves and local.numel() > 0
    spec = _spec(key, dtype, dt.shape, "block", offsets, local_shape)
    return spec, local, saves


# (global shape, mesh, placements) -> _shard_box's result: the same arithmetic for every save of
# a model whose layout does not change, about 80 microseconds per DTensor in torch's helper.
_BOX_CACHE: Dict[Any, Optional[tuple]] = {}


def _cached_shard_box(global_shape: tuple, mesh: Any, placements: list) -> Optional[tuple]:
    try:
        key = (global_shape, mesh, tuple(placements), tuple(mesh.get_coordinate() or ()))
        hash(key)
    except TypeError:  # an unhashable placement or mesh: compute every time
        return _shard_box(global_shape, mesh, placements)
    if key not in _BOX_CACHE:
        if len(_BOX_CACHE) > 65536:
            _BOX_CACHE.clear()
        _BOX_CACHE[key] = _shard_box(global_shape, mesh, placements)
    return _BOX_CACHE[key]


def _shard_box(global_shape: tuple, mesh: Any, placements: list) -> Optional[tuple]:
    """(local shape, global offsets) for plain ``Shard`` / ``Replicate`` placements, by
    arithmetic; None for anything else (``_StridedShard``, empty shards), which torch's
    ``compute_local_shape_and_global_offset`` then computes. That function builds an index tensor
    per sharded dimension (``torch.arange`` over the shard's rows), which costs milliseconds per
    tensor and dominated the staging of a many-tensor save."""
    from torch.distributed.tensor import Shard

    split = getattr(Shard, "local_shard_size_and_offset", None)
    coord = mesh.get_coordinate()
    if split is None or coord is None:
        return None
    shape, offsets = list(global_shape), [0] * len(global_shape)
    for mesh_dim, p in enumerate(placements):
        if p.is_replicate():
            continue
        if type(p) is not Shard:
            return None
        size, offset = split(shape[p.dim], mesh.size(mesh_dim), coord[mesh_dim])
        if not isinstance(size, int) or not isinstance(offset, int) or size == 0:
            return None
        shape[p.dim] = size
        offsets[p.dim] += offset  # a shard of a shard: offsets add up along the dimension
    return tuple(shape), tuple(offsets)


class _ItemCache:
    """The items of one CheckpointIO's previous save, by key. A leaf whose layout did not change
    reuses its item instead of working it out again: a DTensor with the same global shape,
    placements and mesh over local memory with the same data pointer, shape, strides and dtype; a
    plain tensor or FlatShard likewise. Working out a DTensor's box and dtype costs tens of
    microseconds of Python, which thousands of tensors turn into tens of milliseconds of the
    training step's stall. No tensor of the state is held: a hit makes its raw view of the memory
    again (as _tensors.to_raw does for a contiguous CPU tensor), or, for a save that copies the
    bytes at once, hands the copy the memory's address (see _Memory)."""

    def __init__(self) -> None:
        self._entries: Dict[str, tuple] = {}

    @staticmethod
    def signature(value: Any, local: Any) -> tuple:
        memory = (local.data_ptr(), local.shape, local.stride(), local.dtype)
        if isinstance(value, FlatShard):
            return memory + (value.global_shape, value.begin)
        if local is value:
            return memory
        return memory + (value.shape, value.placements, value.device_mesh)

    def get(self, key: str, signature: tuple) -> Optional[tuple]:
        """(spec or None when this rank saves nothing of it, bytes) for an unchanged leaf, else
        None."""
        entry = self._entries.get(key)
        if entry is None or entry[0] != signature:
            return None
        return entry[1:]

    def replace(self, entries: Dict[str, tuple]) -> None:
        self._entries = entries


class _Memory(NamedTuple):
    """A leaf's bytes by address, for a copy made before the save returns (the staging copy): a
    cached leaf skips making a tensor view of itself, which cost more than half of a cache hit
    once the copy has evicted the Python objects from the CPU caches. ``owner`` keeps the memory
    alive until the copy is done."""
    address: int
    nbytes: int
    owner: Any


def _local_memory(value: Any, DTensor: Optional[type]) -> Any:
    """The CPU tensor whose memory a leaf saves, or None when a cached item cannot stand for it
    (another device, a layout to_raw copies)."""
    import torch

    if isinstance(value, FlatShard):
        local = value.tensor
    elif DTensor is not None and isinstance(value, DTensor):
        # A Partial placement is reduced by a collective at every save, which every rank must
        # join: a rank that saves none of the result must not skip it on a cache hit.
        if any(p.is_partial() for p in value.placements):
            return None
        local = getattr(value, "_local_tensor", None)
    elif isinstance(value, torch.Tensor):
        local = value
    else:
        return None
    if local is None or local.device.type != "cpu" or local.numel() == 0 or not local.is_contiguous():
        return None
    return local


def _save_items(flat, cache: Optional[_ItemCache] = None, copied: bool = False
                ) -> Tuple[List[tuple], Dict[str, Any], List[Any]]:
    """(core items, plain data by key, tensors kept alive) of this rank. ``cache``: items of the
    previous save to reuse where a leaf's layout did not change (updated here). ``copied``: the
    caller copies every item's bytes before they are written (_StagingBuffer.copy), so a cache hit
    may give its memory as a _Memory instead of a raw view."""
    import torch

    DTensor = dtensor_type()
    items: List[tuple] = []
    plain: Dict[str, Any] = {}
    keep: List[Any] = []
    entries: Dict[str, tuple] = {}
    for leaf in flat.leaves:
        key, value = leaf.key, leaf.value
        if key == PLAIN_DATA_KEY:
            raise errors.InvalidArgumentError(f"invalid_argument: '{key}' is a reserved key")
        local = _local_memory(value, DTensor) if cache is not None else None
        signature = _ItemCache.signature(value, local) if local is not None else None
        if signature is not None:
            hit = cache.get(key, signature)
            if hit is not None:
                entries[key] = (signature,) + hit
                if hit[0] is not None:
                    raw = (_Memory(signature[0], hit[1], local) if copied
                           else local.detach().reshape(-1).view(torch.uint8))
                    items.append((hit[0], raw))
                    keep.append(raw)
                continue
        spec = None
        if DTensor is not None and isinstance(value, DTensor):
            spec, local_tensor, saves = _dtensor_box(key, value)
            if not saves:
                spec = None
            else:
                dtype, shape, raw = _tensors.to_raw(local_tensor, key)
                spec = spec or _spec(key, dtype, value.shape)
        elif isinstance(value, FlatShard):
            dtype, _, raw = _tensors.to_raw(value.tensor, key)
            spec = _spec(key, dtype, value.global_shape, "flat", begin=value.begin,
                         length=value.tensor.numel())
        elif isinstance(value, torch.Tensor):
            dtype, shape, raw = _tensors.to_raw(value, key)
            spec = _spec(key, dtype, shape)
        else:
            check_plain(key, value)
            plain[key] = value
            continue
        if spec is not None:
            items.append((spec, raw))
            keep.append(raw)
        # Only an item whose raw view is the leaf's own memory can be made again from it.
        if signature is not None and (spec is None or raw.data_ptr() == local.data_ptr()):
            entries[key] = (signature, spec, raw.numel() if spec is not None else 0)
    if cache is not None:
        cache.replace(entries)
    return items, plain, keep


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _merge_plain(reports: List[dict], world: int) -> Optional[bytes]:
    """The plain-data document every rank writes: values equal on every rank once, the others per
    rank (a key missing on a rank is null there)."""
    keys = sorted({k for r in reports for k in r})
    if not keys:
        return None
    values, per_rank = {}, {}
    for k in keys:
        texts = [_canonical(r.get(k)) for r in reports]
        if all(t == texts[0] for t in texts) and all(k in r for r in reports):
            values[k] = reports[0][k]
        else:
            per_rank[k] = [r.get(k) for r in reports]
    doc = {"format": _PLAIN_FORMAT, "version": 1, "world_size": world, "values": values,
           "per_rank": per_rank}
    return json.dumps(doc, sort_keys=True, allow_nan=False).encode()


def _error_code(exc: BaseException) -> str:
    if isinstance(exc, errors.Error):
        return exc.code
    if isinstance(exc, (ValueError, TypeError, KeyError)):
        return "invalid_argument"
    return "internal"


def _agree(comm: TorchCommunicator, what: str, local_error: Optional[BaseException],
           payload: Any = None) -> List[Any]:
    """All-gathers every rank's outcome and payload; raises on every rank if one failed."""
    mine = {"payload": payload}
    if local_error is not None:
        mine = {"error": str(local_error), "code": _error_code(local_error)}
    reports = [json.loads(b) for b in comm.all_gather(json.dumps(mine).encode())]
    failed = [(r, rep) for r, rep in enumerate(reports) if "error" in rep]
    if failed:
        rank, rep = failed[0]
        others = f" ({len(failed) - 1} other ranks failed too)" if len(failed) > 1 else ""
        message = rep["error"]
        prefix = rep["code"] + ": "
        if message.startswith(prefix):
            message = message[len(prefix):]
        exc = errors.error_class(rep["code"])(
            f"{rep['code']}: {what}: rank {rank} failed: {message}{others}")
        raise exc from local_error
    return [rep["payload"] for rep in reports]


# --- save ------------------------------------------------------------------------------------

class _Staged:
    def __init__(self, comm, path, items, keep, plain_doc):
        self.comm, self.path, self.items, self.keep, self.plain_doc = (
            comm, path, items, keep, plain_doc)
        # Set while the ranks' agreement is still to run (an async save runs it in its thread).
        self.error: Optional[BaseException] = None
        self.plain: Optional[Dict[str, Any]] = None
        self.agreed = True


class _StagingBuffer:
    """CPU memory reused by successive async saves for their copies (CheckpointIO holds one and
    waits for the previous save before the next copy). Fresh memory is faulted in page by page
    during the copy, which made the copy several times slower than a memcpy into memory already
    touched; reused, the copy runs at memcpy speed."""

    _ALIGN = 64

    def __init__(self) -> None:
        self._buf: Any = None

    def copy(self, sources: List[Any]) -> List[Any]:
        """Copies each source (a raw tensor or array, or a _Memory) into the buffer; returns the
        copies as numpy views, in order."""
        import torch

        offsets, sizes, addresses, total = [], [], [], 0
        for src in sources:
            if isinstance(src, _Memory):
                address, n = src.address, src.nbytes
            elif isinstance(src, torch.Tensor):
                address, n = src.data_ptr(), src.numel()
            else:
                address, n = src.__array_interface__["data"][0], src.size
            offsets.append(total)
            sizes.append(n)
            addresses.append(address)
            total += (n + self._ALIGN - 1) // self._ALIGN * self._ALIGN
        # Reallocated when too small, or when it holds more than twice what is asked (the state
        # shrank): the buffer stays allocated between saves.
        if self._buf is None or self._buf.numel() < total or self._buf.numel() > 2 * total:
            self._buf = None
            self._buf = torch.empty(max(total, 1), dtype=torch.uint8)
        buf = self._buf.numpy()
        # One call, the GIL released, by the C++ staging copy's threads (8 MiB pieces): slicing
        # and copy_ per tensor in Python cost tens of microseconds each, and torch's copy_ of a
        # large tensor ran 10-15% slower than the pieces here. `sources` keeps every source alive
        # until the call returns.
        _core.copy_addresses_into(addresses, sizes, buf, offsets, torch.get_num_threads())
        return [buf[o:o + n] for o, n in zip(offsets, sizes)]


def _stage(state_dict: dict, checkpoint_dir: Any, process_group: Any, copy: bool,
           staging: Optional[_StagingBuffer] = None, agree_later: bool = False,
           cache: Optional[_ItemCache] = None) -> _Staged:
    """This rank's items (copied when ``copy``), then the ranks' agreement. ``agree_later``: the
    agreement (a collective that waits for the slowest rank) is left to :func:`_agree_staged`,
    which an async save runs in its background thread, so the caller waits for its own copy only;
    the plain data is frozen here (a JSON round trip, as the agreement does) so that later changes
    to the state dict do not reach the checkpoint. ``cache``: see :class:`_ItemCache`."""
    comm = TorchCommunicator(process_group)
    path = os.fspath(checkpoint_dir)
    error: Optional[BaseException] = None
    items: List[tuple] = []
    keep: List[Any] = []
    plain: Dict[str, Any] = {}
    try:
        flat = flatten(state_dict)
        items, plain, keep = _save_items(flat, cache, copied=copy and staging is not None)
        if copy and staging is not None:
            keep = staging.copy(keep)
            items = [(spec, k) for (spec, _), k in zip(items, keep)]
        elif copy:  # async: a CPU copy, so training may change the tensors while files are written
            keep = [k.clone() if hasattr(k, "clone") else k.copy() for k in keep]
            items = [(spec, k) for (spec, _), k in zip(items, keep)]
        if agree_later:
            plain = json.loads(json.dumps(plain, allow_nan=False))
    except Exception as exc:  # every rank must hear of it: agree below
        error = exc
    staged = _Staged(comm, path, items, keep, None)
    staged.error, staged.plain, staged.agreed = error, plain, False
    if not agree_later:
        _agree_staged(staged)
    return staged


def _agree_staged(staged: _Staged) -> None:
    """The ranks' agreement on the staging (raises on every rank if one failed), then the plain
    data document appended to the items."""
    if staged.agreed:
        return
    staged.agreed = True
    payloads = _agree(staged.comm, "preparing the save", staged.error, staged.plain)
    doc = _merge_plain(payloads, staged.comm.size())
    if doc is not None:
        import numpy as np

        raw = np.frombuffer(doc, dtype=np.uint8)
        staged.items.append((_spec(PLAIN_DATA_KEY, "U8", [len(doc)]), raw))
        staged.keep.append(raw)
    staged.plain_doc = doc


def _is_dtensor(value: Any) -> bool:
    DTensor = dtensor_type()
    return DTensor is not None and isinstance(value, DTensor)


def _write(staged: _Staged, replace: bool, sync: bool, epoch: int, global_step: int) -> dict:
    _agree_staged(staged)
    return _core.dist_save(staged.comm, staged.path, staged.items, replace, sync, epoch,
                           global_step)


def save(state_dict: dict, checkpoint_dir: Any, process_group: Any = None, *,
         replace: bool = False, sync: bool = True, epoch: int = 0, global_step: int = 0) -> dict:
    """Collective: every rank of ``process_group`` saves its part of ``state_dict``.

    Returns ``{"path", "files", "bytes_written"}`` (this rank's files). A failure on any rank
    raises on every rank a :class:`ckptio.errors.Error` naming the failing rank; nothing is then
    committed. ``replace`` replaces an existing checkpoint atomically (else AlreadyExistsError).
    """
    staged = _stage(state_dict, checkpoint_dir, process_group, copy=False)
    return _write(staged, replace, sync, epoch, global_step)


def async_save(state_dict: dict, checkpoint_dir: Any, process_group: Any = None, *,
               replace: bool = False, sync: bool = True, epoch: int = 0,
               global_step: int = 0) -> "concurrent.futures.Future[dict]":
    """Collective: copies this rank's part of ``state_dict`` to CPU memory now, then writes it in a
    background thread. Returns a future whose ``result()`` is :func:`save`'s result or raises its
    error, a failure of any rank included (the ranks agree in the background thread, so the call
    waits for this rank's copy only, not for the slowest rank's). The background thread runs the save's collectives on ``process_group``: give a group
    that nothing else uses until ``result()`` returns (``torch.distributed.new_group(
    backend="gloo")``), since two threads must not interleave collectives on one group."""
    return _start_async(_stage(state_dict, checkpoint_dir, process_group, copy=True,
                               agree_later=True), replace, sync, epoch, global_step)


def _start_async(staged: _Staged, replace: bool, sync: bool, epoch: int,
                 global_step: int) -> "concurrent.futures.Future[dict]":
    future: "concurrent.futures.Future[dict]" = concurrent.futures.Future()

    def run() -> None:
        try:
            future.set_result(_write(staged, replace, sync, epoch, global_step))
        except BaseException as exc:  # handed to result()
            future.set_exception(exc)

    threading.Thread(target=run, name="ckptio-async-save", daemon=True).start()
    return future


# --- load ------------------------------------------------------------------------------------

def _load_target(key: str, value: Any) -> Tuple[tuple, Any, Any]:
    """(core spec, destination tensor the core fills, tensor to copy it into or None)."""
    import torch

    if _is_dtensor(value):
        spec, local, _ = _dtensor_box(key, value)
        if spec is None:
            spec = _spec(key, _tensors.safetensors_dtype(value.dtype), value.shape)
        target = local
    elif isinstance(value, FlatShard):
        target = value.tensor
        spec = _spec(key, _tensors.safetensors_dtype(target.dtype), value.global_shape, "flat",
                     begin=value.begin, length=target.numel())
    else:
        target = value
        spec = _spec(key, _tensors.safetensors_dtype(value.dtype), _safetensors_shape(value))
    if target.device.type == "cpu" and target.is_contiguous():
        return spec, target, None
    return spec, torch.empty(target.shape, dtype=target.dtype), target


def _safetensors_shape(t: Any) -> tuple:
    name = _tensors.safetensors_dtype(t.dtype)
    shape = tuple(t.shape)
    if name == "F4" and shape:
        shape = shape[:-1] + (shape[-1] * 2,)
    return shape


def _raw_inout(t: Any) -> Any:
    import torch

    if t.numel() == 0:
        return torch.empty(0, dtype=torch.uint8).numpy()
    return t.detach().reshape(-1).view(torch.uint8).numpy()


def _like(template: Any, value: Any) -> Any:
    """``value`` read from JSON, given back the container types of ``template`` (the value in the
    state dict being loaded) where the structures match: tuples stay tuples, dict keys that were
    ints stay ints (JSON has only lists and string keys)."""
    if isinstance(template, tuple) and isinstance(value, list):
        if len(template) == len(value):
            return tuple(_like(t, v) for t, v in zip(template, value))
        return tuple(value)
    if isinstance(template, list) and isinstance(value, list):
        return [_like(template[i] if i < len(template) else (template[-1] if template else None),
                      v) for i, v in enumerate(value)]
    if isinstance(template, dict) and isinstance(value, dict):
        keys = {str(k): k for k in template}
        return {keys.get(k, k): _like(template.get(keys.get(k, k)), v) for k, v in value.items()}
    return value


def _plain_for(doc: Optional[dict], key: str, rank: int, world: int) -> Any:
    if doc is None or (key not in doc["values"] and key not in doc["per_rank"]):
        raise errors.NotFoundError(f"not_found: key '{key}' is not in the checkpoint")
    if key in doc["values"]:
        return doc["values"][key]
    saved_world = doc["world_size"]
    if saved_world != world:
        raise errors.MismatchError(
            f"mismatch: key '{key}' was saved per rank on {saved_world} ranks (its value differed"
            f" between ranks), which does not say what {world} ranks load; drop it from the state"
            " dict, or save it equal on every rank")
    return doc["per_rank"][key][rank]


def load(state_dict: dict, checkpoint_dir: Any, process_group: Any = None, *,
         threads: int = 0) -> dict:
    """Fills ``state_dict`` in place from a checkpoint saved on any number of ranks.

    Tensors and DTensors get their (local) elements, FlatShards their range, plain values are
    replaced by the saved ones, and Stateful objects get ``load_state_dict`` of their filled state
    dict. Rank-local apart from a final agreement: a failure on any rank raises on every rank.
    Reads ckptio distributed checkpoints and PyTorch DCP folders. Returns ``state_dict``."""
    comm = TorchCommunicator(process_group)
    error: Optional[BaseException] = None
    try:
        _load_local(state_dict, os.fspath(checkpoint_dir), comm.rank(), comm.size(), threads)
    except Exception as exc:
        error = exc
    _agree(comm, "loading", error)
    return state_dict


def _load_local(state_dict: dict, path: str, rank: int, world: int, threads: int) -> None:
    import torch

    flat = flatten(state_dict)
    tensor_leaves = [l for l in flat.leaves
                     if isinstance(l.value, (torch.Tensor, FlatShard))]
    plain_leaves = [l for l in flat.leaves if l not in tensor_leaves]
    for leaf in plain_leaves:
        check_plain(leaf.key, leaf.value)
    if _core.is_distributed_checkpoint(path):
        _load_ckptio(path, tensor_leaves, plain_leaves, rank, world, threads)
    elif _core.is_dcp_checkpoint(path):
        _load_dcp(path, tensor_leaves, plain_leaves)
    else:
        raise errors.NotFoundError(
            f"not_found: '{path}' is neither a ckptio distributed checkpoint nor a DCP folder")
    # Stateful objects last, innermost first (their state dicts now hold the loaded values).
    for obj, sd in flat.stateful:
        obj.load_state_dict(sd)


def _load_ckptio(path, tensor_leaves, plain_leaves, rank, world, threads) -> None:
    reader = _core.DistReader(path)
    items, copies = [], []
    for leaf in tensor_leaves:
        spec, dest, copy_to = _load_target(leaf.key, leaf.value)
        items.append((spec, _raw_inout(dest)))
        if copy_to is not None:
            copies.append((dest, copy_to))
    doc = None
    if plain_leaves:
        shapes = {name: shape for name, _, shape in reader.tensors()}
        if PLAIN_DATA_KEY in shapes:
            import numpy as np

            buf = np.empty(shapes[PLAIN_DATA_KEY], dtype=np.uint8)
            items.append((_spec(PLAIN_DATA_KEY, "U8", buf.shape), buf))
            reader.read(items, threads)
            doc = json.loads(buf.tobytes())
            items = None
    if items is not None:
        reader.read(items, threads)
    _finish(copies)
    for leaf in plain_leaves:
        leaf.assign(_like(leaf.value, _plain_for(doc, leaf.key, rank, world)))


def _finish(copies) -> None:
    import torch

    with torch.no_grad():
        for src, dst in copies:
            dst.copy_(src)


def _load_dcp(path, tensor_leaves, plain_leaves) -> None:
    import torch

    reader = _core.DcpReader(path)
    saved = {name: (dtype, tuple(shape)) for name, dtype, shape in reader.tensors()}
    for leaf in tensor_leaves:
        spec, dest, copy_to = _load_target(leaf.key, leaf.value)
        name, dtype, global_shape, placement, offsets, local_shape, begin, length = spec
        if name not in saved:
            raise errors.NotFoundError(f"not_found: tensor '{name}' is not in DCP folder '{path}'")
        if saved[name] != (dtype, tuple(global_shape)):
            raise errors.MismatchError(
                f"mismatch: tensor '{name}': {dtype} {list(global_shape)} asked, the DCP folder"
                f" holds {saved[name][0]} {list(saved[name][1])}")
        if placement != "flat":
            # The box straight into the destination's memory (the caller's tensor itself when it
            # is a contiguous CPU tensor): no temporary, no copy.
            if placement == "block":
                reader.read_box_into(name, offsets, local_shape, _raw_inout(dest))
            else:
                reader.read_box_into(name, [0] * len(global_shape), global_shape,
                                     _raw_inout(dest))
            if copy_to is not None:
                _finish([(dest, copy_to)])
            continue
        # A FlatShard's range of the flattened tensor is no box: the whole tensor, then the range.
        box = reader.read_box(name, [0] * len(global_shape), global_shape)
        flat = _tensors.from_raw(box[0], box[1], box[2], "pt", name).reshape(-1)
        n = flat.numel()
        out = torch.zeros(length, dtype=flat.dtype)
        end = min(begin + length, n)
        if end > begin:
            out[: end - begin] = flat[begin:end]
        with torch.no_grad():
            (copy_to if copy_to is not None else dest).copy_(out.reshape(dest.shape))
    keys = set(reader.value_keys())
    for leaf in plain_leaves:
        if leaf.key not in keys:
            raise errors.NotFoundError(
                f"not_found: key '{leaf.key}' is not in DCP folder '{path}'")
        leaf.assign(reader.read_value(leaf.key))
