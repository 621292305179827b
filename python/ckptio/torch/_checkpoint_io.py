"""CheckpointIO for PyTorch training: the same checkpoint folders as the C++ ckptio::CheckpointIO.

Components (see docs/checkpoint-io.md): model/ and ema weights as safetensors; the optimizer as
optimizer.safetensors (tensor state named "state.<param index>.<key>", as optimizer.state_dict()
numbers parameters) plus optimizer.json (param_groups, the "step" counters, every non-tensor
value); lr_scheduler.json and sampler.json from state_dict(); running_states.json. Nothing is
pickled, and a checkpoint written here resumes in libtorch and the other way round.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Callable, Optional, Union

import torch

from ckptio import _core
from ckptio.errors import MismatchError
from ckptio.torch import _json
from ckptio.torch._raw import from_raw, size_bytes, to_raw

_RUNNING_KEYS = ("epoch", "step", "global_step", "batch_size", "actual_update_step")


def _state_dict(obj: Any) -> Mapping[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        return obj
    if hasattr(obj, "state_dict"):
        return obj.state_dict()
    raise TypeError(f"expected an nn.Module or a state dict, got {type(obj).__name__}")


def _tensors_in(state: Mapping[str, torch.Tensor], what: str) -> list:
    out = []
    for name, t in state.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{what}: '{name}' is a {type(t).__name__}, not a tensor")
        out.append((str(name), *to_raw(t)))
    return out


def _optimizer_in(optimizer: Any) -> tuple[list, str]:
    """(state tensors, JSON of the rest), keyed like the libtorch adapters key them."""
    sd = optimizer if isinstance(optimizer, Mapping) else optimizer.state_dict()
    tensors = []
    state_json: dict[str, dict[str, Any]] = {}
    for param, per_param in sd.get("state", {}).items():
        plain: dict[str, Any] = {}
        for key, value in per_param.items():
            if "." in str(key):
                raise ValueError(f"optimizer state key '{key}' contains '.'")
            # A 0-d "step" is a counter: JSON, as libtorch keeps it (its loader reads state.N.step).
            if isinstance(value, torch.Tensor) and not (key == "step" and value.dim() == 0):
                tensors.append((str(param), str(key), *to_raw(value)))
            else:
                if isinstance(value, torch.Tensor):
                    number = value.item()
                    value = int(number) if float(number).is_integer() else number
                plain[str(key)] = value
        state_json[str(param)] = plain
    meta = {
        "type": type(optimizer).__name__ if not isinstance(optimizer, Mapping) else "dict",
        "param_groups": sd.get("param_groups", []),
        "state": state_json,
    }
    return tensors, _json.dumps(meta, "optimizer state")


def _optimizer_out(optimizer: Any, loaded: tuple) -> None:
    tensors, meta_text = loaded
    meta = _json.loads(meta_text)
    saved_type, own_type = meta.get("type"), type(optimizer).__name__
    if saved_type not in (None, "dict", own_type):
        # torch's load_state_dict would take e.g. AdamW's state into SGD without a word.
        raise MismatchError(f"mismatch: the checkpoint holds {saved_type} state, the optimizer is {own_type}")
    state: dict[int, dict[str, Any]] = {}
    for param, values in meta.get("state", {}).items():
        entry = state.setdefault(int(param), {})
        for key, value in values.items():
            # torch's optimizers keep "step" as a float32 tensor (they cast it as they need).
            entry[key] = torch.tensor(float(value)) if key == "step" and isinstance(value, (int, float)) else value
    for param, key, dtype, shape, raw in tensors:
        state.setdefault(int(param), {})[key] = from_raw(dtype, shape, raw)
    groups = meta.get("param_groups", [])
    own = optimizer.state_dict()["param_groups"]
    for saved, current in zip(groups, own):
        # Hyperparameters the writer did not know (libtorch has no "foreach", "maximize", ...) keep
        # the optimizer's own values; "betas" come back as a tuple like torch makes them.
        for key, value in current.items():
            saved.setdefault(key, value)
        if isinstance(saved.get("betas"), list):
            saved["betas"] = tuple(saved["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _load_tensors_into(target: Any, loaded: list, strict: bool, what: str):
    state = {name: from_raw(dtype, shape, raw) for name, dtype, shape, raw in loaded}
    if isinstance(target, torch.nn.Module):
        return target.load_state_dict(state, strict=strict)
    if not isinstance(target, Mapping):
        return target.load_state_dict(state)
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    if strict and (missing or unexpected):
        raise MismatchError(f"mismatch: {what}: missing {missing}, unexpected {unexpected}")
    for name in set(target) & set(state):
        dst = target[name]
        if tuple(dst.shape) != tuple(state[name].shape):
            raise MismatchError(
                f"mismatch: {what}: '{name}' is {list(state[name].shape)} in the checkpoint, "
                f"{list(dst.shape)} in memory")
        with torch.no_grad():
            dst.copy_(state[name])
    return torch.nn.modules.module._IncompatibleKeys(missing, unexpected)


class CheckpointIO:
    """Saves and resumes PyTorch training state under ``exp_dir/epoch{E}-global_step{S}/``.

    ``snapshot="copy"`` (async saves): save() returns once the tensors are copied; train on at once.
    ``snapshot="borrow"``: no copy; do not change the tensors (no optimizer.step()) before wait().
    """

    def __init__(
        self,
        exp_dir: Union[str, os.PathLike],
        keep_n_latest: int = 0,
        async_save: bool = False,
        snapshot: str = "copy",
        max_shard_size: Union[str, int] = "4GB",
        sync: bool = True,
        on_phase: Optional[Callable[[str], None]] = None,
    ) -> None:
        """`sync=False` (no fsync) is for tests and benchmarks only (a crash may then lose a "committed"
        checkpoint). `on_phase(name)` is called at the start of each save phase ("snapshot",
        "write_files", "write_manifest", "commit", "prune", "done"), from the thread doing it."""
        self._io = _core.CheckpointIO(
            os.fspath(exp_dir), int(keep_n_latest), bool(async_save), snapshot,
            size_bytes(max_shard_size), bool(sync), on_phase)
        self._borrowed: Optional[list] = None  # Python memory a borrow-mode save still reads

    @property
    def exp_dir(self) -> str:
        return self._io.experiment_dir

    def save(
        self,
        *,
        model: Any = None,
        ema: Any = None,
        optimizer: Any = None,
        lr_scheduler: Any = None,
        sampler: Any = None,
        epoch: int,
        step: int,
        global_step: int,
        batch_size: Optional[int] = None,
        actual_update_step: Optional[int] = None,
        extra: Optional[dict] = None,
        replace: bool = False,
    ) -> str:
        """Saves the given components; returns the checkpoint folder (committed once wait() returns
        for async saves). Errors of an earlier async save are raised here."""
        model_in = None if model is None else _tensors_in(_state_dict(model), "model")
        ema_in = None if ema is None else _tensors_in(_state_dict(ema), "ema")
        opt_tensors, opt_meta = (None, None) if optimizer is None else _optimizer_in(optimizer)
        lr_in = None if lr_scheduler is None else _json.dumps(_plain_state(lr_scheduler), "lr_scheduler state")
        sampler_in = None if sampler is None else _json.dumps(_plain_state(sampler), "sampler state")
        running = [int(epoch), int(step), int(global_step), int(batch_size or 0), int(actual_update_step or 0)]
        extra_in = _json.dumps(extra or {}, "extra")
        path = self._io.save(model_in, ema_in, opt_tensors, opt_meta, lr_in, sampler_in, running, extra_in, replace)
        # The previous save is done once this one started; this one may still read its arrays.
        self._borrowed = [model_in, ema_in, opt_tensors]
        return path

    def wait(self) -> None:
        """Blocks until the save in flight is committed; raises its error."""
        try:
            self._io.wait()
        finally:
            self._borrowed = None

    def busy(self) -> bool:
        return self._io.busy()

    def load(
        self,
        path: Union[str, os.PathLike] = "latest",
        *,
        model: Any = None,
        ema: Any = None,
        optimizer: Any = None,
        lr_scheduler: Any = None,
        sampler: Any = None,
        strict: bool = True,
        verify: bool = False,
    ) -> dict:
        """Restores the given objects in place from "latest" or a checkpoint folder and returns the
        running states: epoch, step, global_step, batch_size, actual_update_step, extra, path."""
        r = self._io.load(os.fspath(path), model is not None, ema is not None, optimizer is not None,
                          lr_scheduler is not None, sampler is not None, strict, verify)
        running = dict(r["running"])
        running["extra"] = _json.loads(r["extra"])
        running["path"] = r["path"]
        running["missing_components"] = list(r["missing_components"])
        if model is not None and r["model"] is not None:
            running["model_keys"] = _load_tensors_into(model, r["model"], strict, "model")
        if ema is not None and r["ema"] is not None:
            _load_tensors_into(ema, r["ema"], strict, "ema")
        if optimizer is not None and r["optimizer"] is not None:
            _optimizer_out(optimizer, r["optimizer"])
        if lr_scheduler is not None and r["lr_scheduler"] is not None:
            _load_plain_state(lr_scheduler, _json.loads(r["lr_scheduler"]))
        if sampler is not None and r["sampler"] is not None:
            _load_plain_state(sampler, _json.loads(r["sampler"]))
        return running

    def list(self, full: bool = False) -> list:
        """Every checkpoint-like folder, oldest first, with its state (committed, damaged, ...)."""
        return self._io.list(full)

    def latest(self, full: bool = False) -> Optional[str]:
        """The newest committed checkpoint folder whose files check, or None."""
        entry = self._io.latest(full)
        return None if entry is None else entry["path"]

    def prune(self, keep: int) -> list:
        """Removes all but the newest `keep` committed checkpoints; returns the removed folders."""
        return self._io.prune(int(keep))

    def verify(self, path: Union[str, os.PathLike], full: bool = False) -> dict:
        """Checks a checkpoint against its manifest (sizes; checksums with full=True)."""
        return self._io.verify(os.fspath(path), full)

    def __enter__(self) -> "CheckpointIO":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wait()


def _plain_state(obj: Any) -> Any:
    return obj if isinstance(obj, Mapping) else obj.state_dict()


def _load_plain_state(obj: Any, state: Any) -> None:
    if isinstance(obj, dict):
        obj.clear()
        obj.update(state)
    else:
        obj.load_state_dict(state)
