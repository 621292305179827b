"""State dicts -> the flat list of what this rank saves or loads (DCP's flattening rules).

Nested dicts are walked and their keys joined with dots (``"optim.state.0.exp_avg"``), as
``torch.distributed.checkpoint`` flattens them; lists and tuples are walked by index when they hold
a tensor, else they are one JSON value. Objects with ``state_dict()`` and ``load_state_dict()``
(``Stateful``: modules, optimizers, schedulers, samplers) are replaced by their state dict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Tuple

from ckptio import errors


@dataclass
class FlatShard:
    """A rank's range of a row-major flattened tensor (a ZeRO partition).

    ``tensor`` is the rank's 1-D buffer: ``tensor.numel()`` elements starting at element ``begin``
    of the flattened ``global_shape`` tensor. Elements past the tensor's end are padding: never
    written, and zeroed on load. Loading fills ``tensor`` in place.
    """

    tensor: Any
    global_shape: Tuple[int, ...]
    begin: int = 0

    def __post_init__(self):
        self.global_shape = tuple(int(d) for d in self.global_shape)
        if self.tensor.dim() != 1:
            raise errors.InvalidArgumentError(
                f"invalid_argument: FlatShard needs a 1-D tensor, got shape {tuple(self.tensor.shape)}")
        if self.begin < 0:
            raise errors.InvalidArgumentError("invalid_argument: FlatShard begin < 0")


def zero_partition(tensor: Any, rank: int, world_size: int) -> FlatShard:
    """Rank ``rank``'s ZeRO partition of the full ``tensor`` (a copy, 1-D).

    The flattened tensor is padded by ``(W - n % W) % W`` zeros and split into ``W`` equal parts,
    as ColossalAI's low-level ZeRO and Open-Sora's ``model_sharding`` do.
    """
    import torch

    n = tensor.numel()
    padded = n + (world_size - n % world_size) % world_size
    part = padded // world_size
    flat = tensor.detach().reshape(-1)
    out = torch.zeros(part, dtype=tensor.dtype, device=tensor.device)
    begin = rank * part
    end = min(begin + part, n)
    if end > begin:
        out[: end - begin].copy_(flat[begin:end])
    return FlatShard(out, tuple(tensor.shape), begin)


def is_stateful(value: Any) -> bool:
    return callable(getattr(value, "state_dict", None)) and callable(
        getattr(value, "load_state_dict", None))


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def _holds_tensor(value: Any) -> bool:
    if _is_tensor(value) or isinstance(value, FlatShard) or is_stateful(value):
        return True
    if isinstance(value, dict):
        return any(_holds_tensor(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_tensor(v) for v in value)
    return False


def check_plain(key: str, value: Any) -> None:
    """InvalidArgumentError unless ``value`` is JSON data (never pickled)."""
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise errors.InvalidArgumentError(
                f"invalid_argument: '{key}': {value} is not a JSON number")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_plain(f"{key}.{i}", v)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise errors.InvalidArgumentError(
                    f"invalid_argument: '{key}': dict key {k!r} is not a string or an int")
            check_plain(f"{key}.{k}", v)
        return
    raise errors.InvalidArgumentError(
        f"invalid_argument: '{key}': a {type(value).__name__} is neither a tensor, a Stateful"
        " object nor JSON data (ckptio never pickles)")


@dataclass
class Leaf:
    key: str
    value: Any
    # Stores a new value where this leaf came from (plain data loads replace values).
    assign: Callable[[Any], None]


@dataclass
class Flat:
    leaves: List[Leaf] = field(default_factory=list)
    # (Stateful object, the state dict it returned), to hand back after loading, innermost first.
    stateful: List[Tuple[Any, Any]] = field(default_factory=list)


def flatten(state_dict: dict) -> Flat:
    """The leaves of ``state_dict`` with their dotted keys; Stateful objects resolved."""
    if not isinstance(state_dict, dict):
        raise errors.InvalidArgumentError(
            f"invalid_argument: a state dict must be a dict, got {type(state_dict).__name__}")
    flat = Flat()
    _walk(flat, "", state_dict)
    seen = set()
    for leaf in flat.leaves:
        if leaf.key in seen:
            raise errors.InvalidArgumentError(
                f"invalid_argument: key '{leaf.key}' appears twice after flattening")
        seen.add(leaf.key)
    return flat


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _walk(flat: Flat, prefix: str, container: Any) -> None:
    items = container.items() if isinstance(container, dict) else enumerate(container)
    for k, v in list(items):
        key = _join(prefix, k)
        if is_stateful(v) and not _is_tensor(v):
            sd = v.state_dict()
            _walk(flat, key, sd)
            flat.stateful.append((v, sd))
        elif isinstance(v, dict) or (isinstance(v, list) and _holds_tensor(v)):
            _walk(flat, key, v)
        elif isinstance(v, tuple) and _holds_tensor(v):
            # A tuple cannot be assigned into: its tensors are filled in place, its plain values
            # are not replaced on load.
            _walk(flat, key, list(v))
        else:
            flat.leaves.append(Leaf(key, v, _setter(container, k)))


def _setter(container: Any, key: Any) -> Callable[[Any], None]:
    def assign(value: Any) -> None:
        container[key] = value

    return assign


def dtensor_type() -> Optional[type]:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch without DTensor
        return None
    return DTensor
