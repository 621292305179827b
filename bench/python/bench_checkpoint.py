#!/usr/bin/env python3
"""ckptio.torch.CheckpointIO against the physical limits and torch.save, measured in the same run.

  async copy save: how long save() blocks the training loop, vs a memcpy of the state into
                   preallocated, pre-faulted memory (the fastest of numpy's copy by one thread,
                   torch's copy_ by torch's threads and memmove in 8 MiB pieces by the staging
                   copy's threads, interleaved with the saves; goal <= 1.2x). The first save,
                   which allocates the staging pool, is reported separately.
  sync save:       a durable save (fsync, checksums, commit) vs the raw write of the same bytes into
                   one new file + fdatasync + folder fsync (the fastest of os.pwrite in 8 MiB pieces
                   by one thread and by the writer's threads, each buffered and with every piece's
                   writeback started behind it; goal >= 0.9x the raw throughput), and vs torch.save
                   of the same state dict followed by fsync.

A measurement more than 5% faster than its limit marks the limit as wrong on this machine
(LIMIT SUSPECT), not the goal as met.

  PYTHONPATH=build/release/python .venv/bin/python bench/python/bench_checkpoint.py [--quick]
      [--size-gib 2] [--runs 3] [--dir DIR] [--out results.json]

Medians of --runs. A benchmark, not a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

import ckptio.torch as ct
from bench_dist import CHUNK, interleaved, raw_write, writer_threads
from machine_note import memory_note

LIMIT_TOLERANCE = 1.05  # as the C++ benchmarks' kLimitTolerance


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

        # Limit: a memcpy of the state into preallocated, pre-faulted memory, the fastest of
        # numpy's copy by one thread, torch's copy_ (split over torch's threads) and memmove in
        # 8 MiB pieces by the staging copy's threads (memmove releases the GIL); measured
        # interleaved with the async saves, one run of each per round.
        dst = [np.empty_like(a) for a in arrays]
        for d, a in zip(dst, arrays):  # touch the pages once
            np.copyto(d, a)
        pieces = [(d.ctypes.data + o, a.ctypes.data + o, min(CHUNK, a.nbytes - o))
                  for d, a in zip(dst, arrays) for o in range(0, a.nbytes, CHUNK)]
        dst_t = [torch.from_numpy(d) for d in dst]
        src_t = list(state.values())
        pool = ThreadPoolExecutor(writer_threads())
        copies = {
            "numpy copyto, 1 thread": lambda: [np.copyto(d, a) for d, a in zip(dst, arrays)],
            f"torch copy_, {torch.get_num_threads()} thread(s)":
                lambda: [d.copy_(a) for d, a in zip(dst_t, src_t)],
            f"memmove, {writer_threads()} threads x 8 MiB":
                lambda: list(pool.map(lambda p: ctypes.memmove(*p), pieces))}
        copy_times = {name: [] for name in copies}

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
            for name, copy in copies.items():
                t0 = time.perf_counter()
                copy()
                copy_times[name].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            async_save()
            blocked.append(time.perf_counter() - t0)
            io.wait()
        pool.shutdown()
        memcpy_variants = {name: statistics.median(v) for name, v in copy_times.items()}
        memcpy_name = min(memcpy_variants, key=memcpy_variants.get)
        memcpy_t = memcpy_variants[memcpy_name]
        del dst, dst_t
        async_t = statistics.median(blocked)
        del io
        shutil.rmtree(work / "async")

        # Limit: the raw write of the same bytes into one new file (bench_dist.raw_write: os.pwrite
        # in 8 MiB pieces, fdatasync, folder fsync), by one thread and by the writer's threads,
        # buffered and with early writeback; the variants take turns, the fastest median counts.
        # The sync saves run between them, one per run, one place later every run, so that a
        # save, like each raw write, follows a single write (after a block of writes one ran up
        # to 20% slower). The previous checkpoint is removed before each save, outside the timing
        # (pruning is the deletion of a file tree, measured by the C++ ckptio-bench-checkpoint).
        views = [memoryview(a).cast("B") for a in arrays]
        raw_variants = {(t, wb): [] for t in sorted({1, writer_threads()}) for wb in (False, True)}
        sync_io = ct.CheckpointIO(work / "sync")
        sync_io.save(model=state, epoch=0, step=0, global_step=0)  # creates the folder
        sync_times = []

        def sync_save(step: int) -> None:
            sync_io.prune(1)
            shutil.rmtree(sync_io.latest())
            t0 = time.perf_counter()
            sync_io.save(model=state, epoch=0, step=step, global_step=step)
            sync_times.append(time.perf_counter() - t0)

        def raw_case(t: int, wb: bool):
            def run() -> None:
                t0 = time.perf_counter()
                raw_write(work / "raw.bin", views, t, False, wb)
                raw_variants[(t, wb)].append(time.perf_counter() - t0)
                os.unlink(work / "raw.bin")
            return run

        raws = [raw_case(t, wb) for t, wb in raw_variants]
        for run in range(args.runs):
            for case in interleaved(raws, [lambda run=run: sync_save(run + 1)], run):
                case()
        raw_medians = {k: statistics.median(v) for k, v in raw_variants.items()}
        raw_best = min(raw_medians, key=raw_medians.get)
        raw_t = raw_medians[raw_best]
        raw_name = (f"{raw_best[0]} thread(s), buffered"
                    + (" + early writeback" if raw_best[1] else ""))
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
    def judged(goal: str, speed: float) -> str:
        """The goal column: LIMIT SUSPECT where ckptio ran > 5% faster than its limit."""
        return f"{goal} (LIMIT SUSPECT)" if speed > LIMIT_TOLERANCE else goal

    rows = [
        (f"memcpy into preallocated memory (limit: {memcpy_name})", memcpy_t, 1.0, "", ""),
        ("async copy save, blocking (staging pool reused)", async_t, async_t / memcpy_t, "x memcpy",
         judged("<= 1.2x", memcpy_t / async_t)),
        ("async copy save, blocking (first save, allocates the pool)", first_t, first_t / memcpy_t, "x memcpy", ""),
        (f"raw write+fsync, one file (limit: {raw_name})", raw_t, 1.0, "", ""),
        ("sync save (fsync, xxh3-128 checksums, commit)", sync_t, raw_t / sync_t, "x raw throughput",
         judged(">= 0.9x", raw_t / sync_t)),
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
