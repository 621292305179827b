#!/usr/bin/env python3
"""ckptio.torch.CheckpointIO against the physical limits and torch.save, measured in the same run.

  async copy save: how long save() blocks the training loop, vs one memcpy of the state into
                   preallocated memory (goal <= 1.2x). The first save, which allocates the staging
                   pool, is reported separately.
  sync save:       a durable save (fsync, checksums, commit) vs raw write()+fsync of the same bytes
                   into one file (goal >= 0.9x the raw throughput), and vs torch.save of the same
                   state dict followed by fsync.

  PYTHONPATH=build/release/python .venv/bin/python bench/python/bench_checkpoint.py [--quick]
      [--size-gib 2] [--runs 3] [--dir DIR] [--out results.json]

Medians of --runs. A benchmark, not a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import ckptio.torch as ct
from machine_note import memory_note


def make_state(total_bytes: int, tensors: int) -> dict:
    per = total_bytes // tensors // 4
    g = torch.Generator().manual_seed(0)
    return {f"layers.{i}.weight": torch.randn(per, generator=g) for i in range(tensors)}


def median_time(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-gib", type=float, default=2.0)
    p.add_argument("--quick", action="store_true", help="256 MiB instead of --size-gib")
    p.add_argument("--tensors", type=int, default=64)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--dir", help="where to write (default: a temp folder, removed afterwards)")
    p.add_argument("--out", help="also write the results as JSON here")
    args = p.parse_args()
    total = int((0.25 if args.quick else args.size_gib) * 2**30)
    work = Path(tempfile.mkdtemp(prefix="ckptio-bench-", dir=args.dir))
    gib = total / 2**30
    try:
        state = make_state(total, args.tensors)
        total = sum(t.numel() * t.element_size() for t in state.values())
        arrays = [t.numpy() for t in state.values()]

        # Limit: one memcpy of the state into preallocated memory.
        dst = [np.empty_like(a) for a in arrays]
        for d, a in zip(dst, arrays):  # touch the pages once
            np.copyto(d, a)
        memcpy_t = median_time(lambda: [np.copyto(d, a) for d, a in zip(dst, arrays)], args.runs)
        del dst

        # Async copy save: the time save() blocks.
        io = ct.CheckpointIO(work / "async", keep_n_latest=1, async_save=True, snapshot="copy")
        step = [0]

        def async_save() -> None:
            step[0] += 1
            io.save(model=state, epoch=0, step=step[0], global_step=step[0])

        t0 = time.perf_counter()
        async_save()
        first_t = time.perf_counter() - t0
        io.wait()
        blocked = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            async_save()
            blocked.append(time.perf_counter() - t0)
            io.wait()
        async_t = statistics.median(blocked)
        del io
        shutil.rmtree(work / "async")

        # Limit: raw write()+fsync of the same bytes into one new file.
        def raw_write() -> None:
            path = work / "raw.bin"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                for a in arrays:
                    view = memoryview(a).cast("B")
                    while view:
                        view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            fsync_dir(work)

        raw_t = median_time(lambda: (raw_write(), os.unlink(work / "raw.bin")), args.runs)

        # Sync save; the previous checkpoint is removed between runs, outside the timing (pruning
        # is the deletion of a file tree, measured by the C++ ckptio-bench-checkpoint).
        sync_io = ct.CheckpointIO(work / "sync")
        sync_io.save(model=state, epoch=0, step=0, global_step=0)  # creates the folder
        sync_times = []
        for run in range(1, args.runs + 1):
            sync_io.prune(1)
            shutil.rmtree(sync_io.latest())
            t0 = time.perf_counter()
            sync_io.save(model=state, epoch=0, step=run, global_step=run)
            sync_times.append(time.perf_counter() - t0)
        sync_t = statistics.median(sync_times)
        del sync_io
        shutil.rmtree(work / "sync")

        def torch_save() -> None:
            path = work / "state.pt"
            with open(path, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            fsync_dir(work)

        torch_t = median_time(lambda: (torch_save(), os.unlink(work / "state.pt")), args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rate = lambda t: gib / t  # noqa: E731
    rows = [
        ("memcpy into preallocated memory (limit)", memcpy_t, 1.0, "", ""),
        ("async copy save, blocking (staging pool reused)", async_t, async_t / memcpy_t, "x memcpy", "<= 1.2x"),
        ("async copy save, blocking (first save, allocates the pool)", first_t, first_t / memcpy_t, "x memcpy", ""),
        ("raw write+fsync, one file (limit)", raw_t, 1.0, "", ""),
        ("sync save (fsync, xxh3-128 checksums, commit)", sync_t, raw_t / sync_t, "x raw throughput", ">= 0.9x"),
        ("torch.save + fsync", torch_t, raw_t / torch_t, "x raw throughput", ""),
    ]
    print(f"# ckptio.torch.CheckpointIO: {len(state)} tensors, {total / 2**20:.1f} MiB, median of "
          f"{args.runs} runs, torch {torch.__version__}\n")
    if memory_note():
        print(memory_note() + "\n")
    print("| measurement | time | GiB/s | ratio | goal |\n|---|---:|---:|---:|---|")
    for name, t, ratio, unit, goal in rows:
        print(f"| {name} | {t * 1e3:.1f} ms | {rate(t):.2f} | {ratio:.2f}{unit} | {goal} |")
    print(f"\nsync save vs torch.save + fsync: {torch_t / sync_t:.2f}x faster")
    if args.out:
        Path(args.out).write_text(json.dumps({
            "bytes": total, "tensors": len(state), "runs": args.runs, "torch": torch.__version__,
            "memory_note": memory_note(),
            "rows": [{"measurement": n, "seconds": t, "ratio": r, "unit": u, "goal": g} for n, t, r, u, g in rows],
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
