"""The collectives of a distributed save, carried by a ``torch.distributed`` process group.

The C++ core calls these methods (with the GIL re-acquired) for its few metadata collectives:
all-gather and broadcast of byte strings, and a barrier. Bytes travel as uint8 CPU tensors (a
length and the first 4 KiB in one collective, any rest in a second), so they need a group that can
run collectives on CPU tensors: gloo, or a mixed ``"cpu:gloo,cuda:nccl"`` group. For a group
without a CPU backend (plain NCCL), a gloo side group over the same ranks is created once
(``torch.distributed.new_group(backend="gloo")``, itself a collective every rank of the job runs
at its first distributed save or load) and kept for later calls. Data never travels through the
group: every rank reads and writes files itself.

A collective waits as long as the group's own timeout (``init_process_group(timeout=...)``);
a timeout becomes :class:`ckptio.errors.TimeoutError` on the waiting ranks, any other failure
:class:`ckptio.errors.IoError`.
"""

from __future__ import annotations

import datetime
from typing import Any, Dict, List, Optional

# group -> its gloo side group, for groups that cannot run collectives on CPU tensors.
_SIDE_GROUPS: Dict[Any, Any] = {}


def _timeout_ms(group: Any) -> int:
    import torch.distributed.distributed_c10d as c10d

    timeout: Optional[datetime.timedelta] = None
    try:
        timeout = c10d._get_pg_config(group).get("timeout")  # the group's own setting
    except Exception:  # private API: older and newer torch may lack it
        timeout = None
    if not isinstance(timeout, datetime.timedelta):
        timeout = c10d.default_pg_timeout
    return max(1, int(timeout.total_seconds() * 1000))


def _cpu_group(group: Any) -> Any:
    import torch.distributed as dist

    backend = str(dist.get_backend(group))
    if "gloo" in backend:
        return group
    key = group if group is not None else "default"
    side = _SIDE_GROUPS.get(key)
    if side is None:
        ranks = dist.get_process_group_ranks(group) if group is not None else None
        side = dist.new_group(ranks=ranks, backend="gloo", timeout=datetime.timedelta(
            milliseconds=_timeout_ms(group)))
        _SIDE_GROUPS[key] = side
    return side


def _collective(name: str):
    """Turns the group's failures into ckptio errors: TimeoutError when the collective timed out
    (gloo: "Timed out waiting ...", NCCL: "... timeout ..."), IoError otherwise."""

    def wrap(method):
        def run(self, *args):
            from ckptio import errors

            try:
                return method(self, *args)
            except errors.Error:
                raise
            except Exception as exc:
                text = str(exc)
                cls = errors.TimeoutError if "imed out" in text or "imeout" in text else errors.IoError
                raise cls(f"{cls.code}: rank {self._rank}: collective {name} on the process group"
                          f" failed: {text}") from exc

        run.__name__ = method.__name__
        run.__doc__ = method.__doc__
        return run

    return wrap


# Bytes per rank that travel in the first collective of an all_gather or broadcast, after an
# 8-byte length: the ranks' agreements and the folder name fit, so those take one collective
# instead of two (sizes, then data); each collective costs a round trip of every rank.
_FIRST_ROUND = 4096


def _bytes_tensor(data: bytes) -> Any:
    import torch

    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _framed(data: bytes) -> Any:
    """[len(data) as int64][data[:_FIRST_ROUND], zero padded] as one uint8 tensor."""
    import torch

    buf = torch.zeros(8 + _FIRST_ROUND, dtype=torch.uint8)
    buf[:8] = torch.tensor([len(data)], dtype=torch.int64).view(torch.uint8)
    head = min(len(data), _FIRST_ROUND)
    if head:
        buf[8:8 + head] = _bytes_tensor(data[:head])
    return buf


def _length(framed: Any) -> int:
    import torch

    return int(framed[:8].view(torch.int64).item())


class TorchCommunicator:
    """A ckptio communicator over a ``torch.distributed`` process group (None: the default)."""

    def __init__(self, process_group: Any = None):
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized():
            from ckptio import errors

            raise errors.InvalidArgumentError(
                "invalid_argument: ckptio.dist needs torch.distributed.init_process_group first")
        self.group = _cpu_group(process_group)
        self._rank = dist.get_rank(self.group)
        self._size = dist.get_world_size(self.group)
        self.timeout_ms = _timeout_ms(self.group)

    def rank(self) -> int:
        return self._rank

    def size(self) -> int:
        return self._size

    @_collective("all_gather")
    def all_gather(self, data: bytes) -> List[bytes]:
        import torch
        import torch.distributed as dist

        # One collective of [length, first _FIRST_ROUND bytes] per rank, a second one only for
        # what some rank has beyond that: the agreements of a save fit in the first.
        n = len(data)
        mine = _framed(data)
        outs = [torch.empty_like(mine) for _ in range(self._size)]
        dist.all_gather(outs, mine, group=self.group)
        counts = [_length(o) for o in outs]
        parts = [o[8:8 + min(c, _FIRST_ROUND)].numpy().tobytes() for o, c in zip(outs, counts)]
        rest = max(counts) - _FIRST_ROUND
        if rest > 0:
            tail = torch.zeros(rest, dtype=torch.uint8)
            if n > _FIRST_ROUND:
                tail[: n - _FIRST_ROUND] = _bytes_tensor(data[_FIRST_ROUND:])
            outs = [torch.empty(rest, dtype=torch.uint8) for _ in range(self._size)]
            dist.all_gather(outs, tail, group=self.group)
            parts = [p + o[: max(c - _FIRST_ROUND, 0)].numpy().tobytes()
                     for p, o, c in zip(parts, outs, counts)]
        return parts

    @_collective("broadcast")
    def broadcast(self, data: bytes, root: int) -> bytes:
        import torch
        import torch.distributed as dist

        buf = _framed(data if self._rank == root else b"")
        dist.broadcast(buf, group=self.group, group_src=root)
        n = _length(buf)
        if self._rank == root:
            if n > _FIRST_ROUND:
                dist.broadcast(_bytes_tensor(data[_FIRST_ROUND:]), group=self.group,
                               group_src=root)
            return bytes(data)
        out = buf[8:8 + min(n, _FIRST_ROUND)].numpy().tobytes()
        if n > _FIRST_ROUND:
            tail = torch.empty(n - _FIRST_ROUND, dtype=torch.uint8)
            dist.broadcast(tail, group=self.group, group_src=root)
            out += tail.numpy().tobytes()
        return out

    @_collective("barrier")
    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier(group=self.group)
