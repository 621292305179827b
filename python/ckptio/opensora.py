"""Open-Sora's checkpoint utilities (``opensora/utils/ckpt.py``) on ckptio's distributed checkpoints.

Same names and arguments: ``CheckpointIO.save/load``, ``load_checkpoint``, ``rm_checkpoints``,
``model_sharding``, ``model_gathering``, ``record_model_param_shape``, ``remove_padding``. The
``booster`` argument is accepted and not needed. Differences from Open-Sora (docs/python-dist.md):

- A checkpoint ``epoch{E}-global_step{actual_update_step}`` is one ckptio distributed checkpoint
  (every rank writes its pieces in parallel, committed atomically) instead of folders ``model/``,
  ``optimizer/``, ``lr_scheduler``, ``ema.safetensors``, ``sampler``, ``running_states.json``.
- The EMA is not gathered to rank 0: every rank writes its ``model_sharding`` partition directly
  (a flat range, padding never written). It loads back as whole tensors (unsharded EMA, as
  Open-Sora's ``load`` gives it), as partitions when ``ema`` is already sharded, or for inference
  with ``load_checkpoint(model, path, cai_model_name="ema")`` in one process.
- Running states and the sampler state are JSON inside the checkpoint, never pickled.
- The optimizer and scheduler are saved through ``state_dict()``; an optimizer whose state differs
  between ranks must hold DTensors or :class:`ckptio.dist.FlatShard` values (ColossalAI's
  LowLevelZeroOptimizer partitions are not recognised).
- ``include_master_weights`` is accepted and ignored; ``lora=True`` saves the model like any other.
"""

from __future__ import annotations

import functools
import glob
import operator
import os
import re
import shutil
from typing import Any, Dict, Optional, Tuple

import torch
import torch.distributed as dist

from ckptio import _core
from ckptio import dist as cdist

__all__ = ["CheckpointIO", "load_checkpoint", "rm_checkpoints", "model_sharding",
           "model_gathering", "record_model_param_shape", "remove_padding"]


def record_model_param_shape(model: torch.nn.Module) -> dict:
    """Each parameter's shape, by name (before ``model_sharding``)."""
    return {name: param.shape for name, param in model.named_parameters()}


def model_sharding(model: torch.nn.Module, device: torch.device = None) -> None:
    """Keeps this rank's partition of every parameter: flattened, padded by ``(W - n % W) % W``,
    split into W equal parts (W = world size). Same layout as Open-Sora and ZeRO."""
    rank, world = dist.get_rank(), dist.get_world_size()
    for _, param in model.named_parameters():
        if device is None:
            device = param.device
        param.data = cdist.zero_partition(param.data, rank, world).tensor.to(device)


def remove_padding(tensor: torch.Tensor, original_shape: tuple) -> torch.Tensor:
    return tensor[: functools.reduce(operator.mul, original_shape, 1)]


def model_gathering(model: torch.nn.Module, model_shape_dict: dict, pinned_state_dict: dict) -> None:
    """Open-Sora's gathering (all-gather per parameter, rank 0 fills ``pinned_state_dict``); kept
    for scripts that call it. ``CheckpointIO.save`` does not need it."""
    rank, world = dist.get_rank(), dist.get_world_size()
    params = set()
    for name, param in model.named_parameters():
        params.add(name)
        parts = [torch.empty_like(param.data) for _ in range(world)]
        dist.all_gather(parts, param.data)
        if rank == 0:
            full = remove_padding(torch.cat(parts), model_shape_dict[name])
            pinned_state_dict[name].copy_(full.view(model_shape_dict[name]))
    if rank == 0:
        for k, v in model.state_dict(keep_vars=True).items():
            if k not in params:
                pinned_state_dict[k].copy_(v)
    dist.barrier()


def _checkpoint_key(path: str) -> Tuple[int, int]:
    m = re.search(r"epoch(\d+)-global_step(\d+)", path)
    return (int(m.group(1)), int(m.group(2))) if m else (-1, -1)


def rm_checkpoints(save_dir: str, keep_n_latest: int = 0) -> None:
    """Rank 0 removes all but the ``keep_n_latest`` newest ``epoch*-global_step*`` checkpoints
    (by epoch, then step); an ``eval`` folder inside a checkpoint is kept, as Open-Sora does."""
    if keep_n_latest <= 0 or dist.get_rank() != 0:
        return
    found = [p for p in glob.glob(os.path.join(save_dir, "epoch*-global_step*"))
             if _checkpoint_key(p) != (-1, -1)]
    found.sort(key=_checkpoint_key, reverse=True)
    for path in found[keep_n_latest:]:
        for item in glob.glob(os.path.join(path, "*")) + glob.glob(os.path.join(path, ".*")):
            if os.path.isdir(item):
                if os.path.basename(item) != "eval":
                    shutil.rmtree(item)
            else:
                os.remove(item)
        if not os.listdir(path):
            os.rmdir(path)


def load_checkpoint(model: torch.nn.Module, path: str, cache_dir: str = None,
                    device_map: Any = "cpu", cai_model_name: str = "model", strict: bool = False,
                    rename_keys: dict = None) -> torch.nn.Module:
    """Loads weights into ``model`` in one process: a ``.safetensors`` / ``.pt`` file, a sharded
    folder, or a ckptio distributed checkpoint, whose ``cai_model_name`` part is loaded (``"ema"``
    for the EMA saved by ``CheckpointIO.save``). ``cache_dir`` and ``device_map`` are accepted;
    tensors are copied into the model's own devices."""
    from ckptio.torch import load_checkpoint as ckptio_load

    rename = dict(rename_keys or {})
    if os.path.isdir(path) and _core.is_distributed_checkpoint(os.fspath(path)):
        rename = {f"{cai_model_name}.": "", **rename}
    ckptio_load(model, path, strict=strict, rename_keys=rename or None)
    return model


def _unwrap(model: Any) -> Any:
    return model.unwrap() if hasattr(model, "unwrap") else model


class CheckpointIO:
    """Open-Sora's ``CheckpointIO``: ``save`` returns the checkpoint folder, ``load`` returns
    (epoch, step). With ``async_io`` the tensors are copied to CPU memory during ``save`` and
    written in the background; the next ``save`` (or ``_sync_io()``) waits for it and raises its
    error. The background save runs on a gloo group of its own."""

    def __init__(self, n_write_entries: int = 32):
        self.n_write_entries = n_write_entries  # accepted; ckptio sizes its own I/O
        self._pending = None
        self._group = None

    def _sync_io(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __del__(self):
        try:
            self._sync_io()
        except Exception:  # nothing to raise into at interpreter exit
            pass

    def _state(self, model, ema, optimizer, lr_scheduler, ema_shape_dict) -> Dict[str, Any]:
        state: Dict[str, Any] = {}
        if model is not None:
            state["model"] = _unwrap(model).state_dict()
        if ema is not None:
            state["ema"] = _ema_state(ema, ema_shape_dict)
        if optimizer is not None:
            state["optimizer"] = _unwrap(optimizer)
        if lr_scheduler is not None:
            state["lr_scheduler"] = lr_scheduler
        return state

    def save(self, booster: Any, save_dir: str, model: torch.nn.Module = None,
             ema: torch.nn.Module = None, optimizer: Any = None, lr_scheduler: Any = None,
             sampler=None, epoch: int = None, step: int = None, global_step: int = None,
             batch_size: int = None, lora: bool = False, actual_update_step: int = None,
             ema_shape_dict: dict = None, async_io: bool = True,
             include_master_weights: bool = False) -> str:
        self._sync_io()
        path = os.path.join(save_dir, f"epoch{epoch}-global_step{actual_update_step}")
        state = self._state(model, ema, optimizer, lr_scheduler, ema_shape_dict)
        state["running_states"] = {"epoch": epoch, "step": step, "global_step": global_step,
                                   "batch_size": batch_size,
                                   "actual_update_step": actual_update_step}
        if sampler is not None:
            state["sampler"] = sampler.state_dict(step)  # Open-Sora's VariableVideoBatchSampler
        options = dict(replace=True, epoch=int(epoch or 0), global_step=int(global_step or 0))
        if async_io:
            if self._group is None:
                self._group = dist.new_group(backend="gloo")
            self._pending = cdist.async_save(state, path, self._group, **options)
        else:
            cdist.save(state, path, **options)
        return path

    def load(self, booster: Any, load_dir: str, model: torch.nn.Module = None,
             ema: torch.nn.Module = None, optimizer: Any = None, lr_scheduler: Any = None,
             sampler=None, strict: bool = False,
             include_master_weights: bool = False) -> Tuple[int, int]:
        self._sync_io()
        shapes = {name: tuple(shape) for name, _, shape in _core.DistReader(load_dir).tensors()}
        state = self._state(model, None, optimizer, lr_scheduler, None)
        if ema is not None:
            state["ema"] = _ema_targets(ema, shapes)
        if model is not None and not strict:
            state["model"] = {k: v for k, v in state["model"].items() if f"model.{k}" in shapes}
        running = {"epoch": 0, "step": 0, "global_step": 0, "batch_size": 0,
                   "actual_update_step": 0}
        state["running_states"] = running
        cdist.load(state, load_dir)
        if model is not None:
            _unwrap(model).load_state_dict(state["model"], strict=strict)
        if sampler is not None:
            sd = {"sampler": _sampler_template(sampler)}
            cdist.load(sd, load_dir)
            sampler.load_state_dict(sd["sampler"])
        return running["epoch"], running["step"]


def _ema_state(ema: torch.nn.Module, ema_shape_dict: Optional[dict]) -> Dict[str, Any]:
    """The EMA as saved: sharded parameters as flat ranges, the rest whole (replicated)."""
    rank = dist.get_rank()
    state: Dict[str, Any] = {}
    params = dict(ema.named_parameters())
    for name, value in ema.state_dict(keep_vars=True).items():
        shape = tuple((ema_shape_dict or {}).get(name, value.shape))
        if name in params and tuple(value.shape) != shape:
            state[name] = cdist.FlatShard(value.data, shape, rank * value.numel())
        else:
            state[name] = value.data
    return state


def _ema_targets(ema: torch.nn.Module, shapes: Dict[str, tuple]) -> Dict[str, Any]:
    """Where the saved EMA goes: whole tensors for an unsharded EMA, this rank's partitions for
    one already passed through model_sharding."""
    rank = dist.get_rank()
    state: Dict[str, Any] = {}
    for name, value in ema.state_dict(keep_vars=True).items():
        shape = shapes.get(f"ema.{name}", tuple(value.shape))
        if tuple(value.shape) != shape and value.dim() == 1:
            state[name] = cdist.FlatShard(value.data, shape, rank * value.numel())
        else:
            state[name] = value.data
    return state


def _sampler_template(sampler: Any) -> Any:
    try:
        return sampler.state_dict(0)
    except TypeError:
        return sampler.state_dict()
