"""Training checkpoints of sharded models: ckptio.torch.CheckpointIO's interface over
ckptio.dist.save / load (one distributed checkpoint per step, every rank writing its pieces)."""

from __future__ import annotations

import os
import re
import shutil
import warnings
from typing import Any, Dict, List, Optional

from ckptio import errors

_NAME = re.compile(r"^epoch(\d+)-global_step(\d+)$")
# The temp folder a save writes into before its commit renames it (io::temp_path_for): one left
# behind means the save's coordinator died before the commit.
_TEMP = re.compile(r"^\.epoch\d+-global_step\d+\.tmp-")


class CheckpointIO:
    """``exp_dir/epoch{E}-global_step{S}/``, each a ckptio distributed checkpoint holding the
    model, EMA, optimizer, LR scheduler and sampler states (any mix of plain tensors, DTensors,
    FlatShards and plain data) and the running states. Collective: every rank of
    ``process_group`` calls ``save`` and ``load`` with the same arguments apart from its own
    objects. ``keep_n_latest`` > 0: rank 0 removes older checkpoints once a save is committed.
    After each committed save rank 0 also removes the temp folders of saves interrupted before
    their commit (a crashed job's), as ``ckptio.torch.CheckpointIO`` does.
    ``async_save``: ``save`` returns once this rank's tensors are copied to CPU memory and the
    files are written by a background thread; ``wait()`` (or the next ``save``) raises its error.
    An async save runs its collectives on ``process_group``: give one that the training's own
    collectives do not use (``torch.distributed.new_group(backend="gloo")``); without one a gloo
    group of its own is created at the first async save."""

    def __init__(self, exp_dir: Any, keep_n_latest: int = 0, async_save: bool = False,
                 process_group: Any = None, sync: bool = True):
        self.exp_dir = os.fspath(exp_dir)
        self.keep_n_latest = keep_n_latest
        self.async_save = async_save
        self.process_group = process_group
        self.sync = sync
        self._pending = None
        # The async saves' copies, reused from one save to the next (see _StagingBuffer), and the
        # items of the previous save (see _ItemCache).
        self._staging = None
        self._items = None

    # --- saving -------------------------------------------------------------------------------
    def save(self, *, model: Any = None, ema: Any = None, optimizer: Any = None,
             lr_scheduler: Any = None, sampler: Any = None, epoch: int, step: int,
             global_step: int, batch_size: Optional[int] = None,
             actual_update_step: Optional[int] = None, extra: Optional[dict] = None,
             replace: bool = False) -> str:
        from ckptio import dist as cdist

        self.wait()
        path = os.path.join(self.exp_dir, f"epoch{epoch}-global_step{global_step}")
        state: Dict[str, Any] = {}
        for key, obj in (("model", model), ("ema", ema), ("optimizer", optimizer),
                         ("lr_scheduler", lr_scheduler), ("sampler", sampler)):
            if obj is not None:
                state[key] = obj
        state["running_states"] = {
            "epoch": epoch, "step": step, "global_step": global_step, "batch_size": batch_size,
            "actual_update_step": actual_update_step,
            # In a list: one JSON value (a dict would be flattened into keys a load cannot guess).
            "extra": [extra or {}]}
        options = dict(replace=replace, sync=self.sync, epoch=epoch, global_step=global_step)
        if self._items is None:
            self._items = cdist._ItemCache()
        if self.async_save:
            if self._staging is None:
                self._staging = cdist._StagingBuffer()
            group = self.process_group
            if group is None:
                import torch.distributed as dist

                group = self.process_group = dist.new_group(backend="gloo")
            staged = cdist._stage(state, path, group, copy=True, staging=self._staging,
                                  agree_later=True, cache=self._items)
            future = cdist._start_async(staged, **options)
            self._pending = (future, group)
        else:
            cdist._write(cdist._stage(state, path, self.process_group, copy=False,
                                      cache=self._items), **options)
            self._prune(self.process_group)
        return path

    def wait(self) -> None:
        """Blocks until the save in flight is committed (then prunes); raises its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            future, group = pending
            future.result()
            self._prune(group)

    def busy(self) -> bool:
        return self._pending is not None and not self._pending[0].done()

    def _prune(self, group: Any) -> None:
        import torch.distributed as dist

        if dist.get_rank(group) != 0:
            return
        # This job's own saves are done (an async one is waited for first), so a temp folder
        # left in exp_dir is a dead save's.
        try:
            names = os.listdir(self.exp_dir)
        except FileNotFoundError:
            names = []
        for name in names:
            if _TEMP.match(name):
                shutil.rmtree(os.path.join(self.exp_dir, name), ignore_errors=True)
        if self.keep_n_latest > 0:
            self.prune(self.keep_n_latest)

    def prune(self, keep: int) -> List[str]:
        """Removes all but the ``keep`` newest checkpoints (call it on one rank); returns them."""
        removed = []
        for path in self.list()[keep:] if keep > 0 else []:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        return removed

    # --- loading ------------------------------------------------------------------------------
    def list(self) -> List[str]:
        """Committed checkpoints, newest first (by global step, then epoch)."""
        from ckptio import _core

        found = []
        try:
            names = os.listdir(self.exp_dir)
        except FileNotFoundError:
            return []
        for name in names:
            m = _NAME.match(name)
            path = os.path.join(self.exp_dir, name)
            if m and _core.is_distributed_checkpoint(path):
                found.append((int(m.group(2)), int(m.group(1)), path))
        return [p for _, _, p in sorted(found, reverse=True)]

    def latest(self) -> Optional[str]:
        found = self.list()
        return found[0] if found else None

    def load(self, path: Any = "latest", *, model: Any = None, ema: Any = None,
             optimizer: Any = None, lr_scheduler: Any = None, sampler: Any = None) -> dict:
        """Restores the given objects in place and returns the running states (``epoch``,
        ``step``, ``global_step``, ``batch_size``, ``actual_update_step``, ``extra``, ``path``).
        ``"latest"`` tries the newest checkpoint first and falls back to older ones when one
        cannot be read (with a warning); every rank makes the same choice, since a failed load
        raises on every rank."""
        from ckptio import dist as cdist

        self.wait()
        candidates = self.list() if path == "latest" else [os.fspath(path)]
        if not candidates:
            raise errors.NotFoundError(f"not_found: no committed checkpoint in '{self.exp_dir}'")
        last_error: Optional[BaseException] = None
        for candidate in candidates:
            state: Dict[str, Any] = {}
            for key, obj in (("model", model), ("ema", ema), ("optimizer", optimizer),
                             ("lr_scheduler", lr_scheduler), ("sampler", sampler)):
                if obj is not None:
                    state[key] = obj
            running = {"epoch": 0, "step": 0, "global_step": 0, "batch_size": None,
                       "actual_update_step": None, "extra": [None]}
            state["running_states"] = running
            try:
                cdist.load(state, candidate, self.process_group)
            except (errors.CorruptError, errors.IoError, errors.NotFoundError) as exc:
                if path != "latest":
                    raise
                warnings.warn(f"ckptio: skipping checkpoint '{candidate}': {exc}")
                last_error = exc
                continue
            return dict(running, extra=running["extra"][0], path=candidate)
        raise errors.NotFoundError(
            f"not_found: no checkpoint in '{self.exp_dir}' could be loaded (last: {last_error})")
