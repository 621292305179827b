"""Plain Python state (param_groups, scheduler and sampler state) <-> the JSON the core stores.

Strict JSON has no NaN or infinity, which schedulers use (ReduceLROnPlateau's ``best`` starts at
inf), so non-finite floats are written as {"__float__": "inf"} and read back as floats.
"""

from __future__ import annotations

import json
import math
from typing import Any

import torch


def _encode(value: Any, what: str) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TypeError(f"{what}: tensors other than scalars cannot be stored as JSON")
        return _encode(value.item(), what)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _encode(value.item(), what)
    if isinstance(value, dict):
        return {str(k): _encode(v, f"{what}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v, what) for v in value]
    raise TypeError(f"{what}: {type(value).__name__} cannot be stored as JSON")


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and "__float__" in value:
            return float(value["__float__"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def dumps(value: Any, what: str) -> str:
    return json.dumps(_encode(value, what), allow_nan=False)


def loads(text: str) -> Any:
    return _decode(json.loads(text))
