"""Writes a PyTorch Distributed Checkpoint with `torch.distributed.checkpoint.save` from WORLD gloo
processes (run as a script: _dcp_fixture.py OUT WORLD PORT, or one rank of them: ... PORT RANK), and
the full tensors it holds.

The state dict has row- and column-sharded DTensors (uneven, one chunk empty with 4 ranks), a ShardedTensor of 2-D blocks
(several boxes per rank), replicated tensors (saved once), a 0-d tensor and non-tensor values.
`expected()` is what every key holds once assembled, computed the same way.
"""

from __future__ import annotations

import os
import sys

import torch


def expected() -> dict:
    return {
        "model.rows": torch.arange(7 * 3, dtype=torch.float32).reshape(7, 3),
        "model.cols": (torch.arange(4 * 6, dtype=torch.float32) / 7).to(torch.bfloat16).reshape(4, 6),
        "model.blocks": torch.arange(8 * 12, dtype=torch.int32).reshape(8, 12),
        "model.rep": torch.tensor([1, 2, 3], dtype=torch.int64),
        "model.scalar": torch.tensor(2.5, dtype=torch.float64),
    }


EXPECTED_VALUES = {"step": 7, "name": "hello", "extra.lr": 0.25}


def _run(rank: int, world: int, path: str, port: int) -> None:
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed._shard.sharded_tensor import Shard as STShard
    from torch.distributed._shard.sharded_tensor import ShardMetadata, init_from_local_shards
    from torch.distributed.tensor import Shard, distribute_tensor, init_device_mesh

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    mesh = init_device_mesh("cpu", (world,))
    full = expected()
    w, col, g = full["model.rows"], full["model.cols"], full["model.blocks"]
    # torch.chunk's split: 7 rows on 4 ranks are 2, 2, 2, 1; 6 columns are 2, 2, 2, 0 (an empty
    # chunk on the last rank).
    rows = distribute_tensor(w, mesh, [Shard(0)])
    cols = distribute_tensor(col, mesh, [Shard(1)])
    # A 4x4 grid of 2x3 blocks; rank r holds the blocks with (i + j) % world == r.
    shards = [STShard(g[2 * i:2 * i + 2, 3 * j:3 * j + 3].contiguous(),
                      ShardMetadata([2 * i, 3 * j], [2, 3], f"rank:{rank}/cpu"))
              for i in range(4) for j in range(4) if (i + j) % world == rank]
    blocks = init_from_local_shards(shards, [8, 12])
    state = {
        "model": {"rows": rows, "cols": cols, "blocks": blocks, "rep": full["model.rep"],
                  "scalar": full["model.scalar"]},
        "step": 7, "name": "hello", "extra": {"lr": 0.25},
    }
    dcp.save(state, checkpoint_id=path)
    dist.destroy_process_group()


if __name__ == "__main__":
    out, world, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if len(sys.argv) > 4:  # one rank of WORLD, started by the caller (tests/python/_dist_launch.py)
        _run(int(sys.argv[4]), world, out, port)
    else:
        import torch.multiprocessing as mp

        mp.spawn(_run, args=(world, out, port), nprocs=world)
