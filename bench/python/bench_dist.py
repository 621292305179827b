#!/usr/bin/env python3
"""ckptio.dist against PyTorch DCP and the raw limits, on 1, 2 and 4 gloo ranks, in one run.

The state is a sharded model and its Adam state: DTensors with Shard(0) on a 1-D CPU mesh
(F32 and BF16 parameters of 256 B .. 64 MiB, F32 exp_avg / exp_avg_sq of the same shapes, and a
replicated 0-d step tensor per parameter), default 1 GiB in all (--quick: 256 MiB).

  save (sync, durable): ckptio.dist.save(sync=True) vs dcp.save with FileSystemWriter(
        sync_files=True, thread_count=t), t in {1, 2, 4} (the best t is the peer), vs the raw
        write limit: the same ranks write the same bytes (one file per rank, like ckptio) by
        parallel os.pwrite, buffered and O_DIRECT, then fdatasync and a folder fsync; the faster
        of the two is the limit.
  async: the time the call blocks: ckptio.dist.async_save vs dcp.async_save (its staging copy),
        vs a memcpy of the rank's shard into pre-faulted memory (the limit: the faster of torch's
        copy_ and memmove in 8 MiB pieces, both by torch's threads); each waits for its
        write to finish before the next measurement.
  load 4 -> 2: checkpoints saved on 4 ranks (each library its own format) loaded on 2 ranks into
        DTensors with Shard(0) on a 2-rank mesh: ckptio.dist.load vs dcp.load; warm page cache.
  peak extra host memory of a save, per rank: VmHWM above the RSS before the call (reset through
        /proc/self/clear_refs), with a fresh process group and processes per case; for the async
        saves, beyond the staging copy of the rank's shard.

Every measurement set runs in freshly started processes (one per rank) with a fresh gloo group;
times are the slowest rank's, after a barrier; medians of --runs. Ranks > 1 run with
OMP_NUM_THREADS=1, as torchrun starts them. A benchmark, not a test: numbers depend on the machine
and its load.

  PYTHONPATH=build/release/python .venv/bin/python bench/python/bench_dist.py [--quick]
      [--gib 1] [--ranks 1,2,4] [--runs 3] [--dir DIR] [--out results.json]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import mmap
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from machine_note import memory_note

MIB = 1 << 20
CHUNK = 8 * MIB  # io::AsyncWriter's default chunk
DCP_THREADS = (1, 2, 4)
LIMIT_TOLERANCE = 1.05  # a ratio above this to a limit means the limit is wrong on this machine


# --- memory ------------------------------------------------------------------------------------

def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # "5": VmHWM := current RSS
        f.write("5")


def trim_heap() -> None:
    """Hands the heap's free memory back to the kernel (glibc), so that RSS measures what is held:
    building the state frees temporaries that a later allocation would reuse unseen."""
    import ctypes

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


# --- the state ---------------------------------------------------------------------------------

def layout(total_bytes: int):
    """[(name, rows, cols, dtype name)] of the parameters: a third of the bytes in parameters,
    two thirds in the optimizer's two moments (F32). Rows are a multiple of 4 so that Shard(0)
    splits evenly over 1, 2 and 4 ranks."""
    sizes = [64 * MIB, 16 * MIB, 4 * MIB, 1 * MIB, 64 << 10, 256]
    params, used, i = [], 0, 0
    budget = total_bytes
    while used < budget:
        dtype = "bfloat16" if i % 2 else "float32"
        item = 2 if dtype == "bfloat16" else 4
        # parameter bytes p, moments 2 * p * 4 / item: p * (1 + 8 / item) in all
        size = min(sizes[i % len(sizes)], budget - used)
        numel = max(size // (1 + 8 // item) // item, 64)
        cols = 64 if numel >= 256 else 16
        rows = max(4, (numel // cols) // 4 * 4)
        params.append((f"layers.{i}.weight", rows, cols, dtype))
        used += rows * cols * (item + 8)
        i += 1
    return params


def make_state(total_bytes: int, mesh, world: int, rank: int):
    """{"model": {name: DTensor}, "optim": {"state": {name: {"exp_avg", "exp_avg_sq", "step"}}}}.
    Each local shard holds its global element indices (mod 2**20), so loads can be checked."""
    import torch
    from torch.distributed.tensor import DTensor, Shard

    def shard(rows, cols, dtype, salt):
        local_rows = rows // world
        begin = rank * local_rows * cols
        local = torch.arange(begin, begin + local_rows * cols, dtype=torch.int64)
        local = (local + salt) % (1 << 20)
        local = local.to(getattr(torch, dtype)).reshape(local_rows, cols)
        return DTensor.from_local(local, mesh, [Shard(0)], run_check=False,
                                  shape=torch.Size((rows, cols)), stride=(cols, 1))

    model, optim = {}, {}
    for i, (name, rows, cols, dtype) in enumerate(layout(total_bytes)):
        model[name] = shard(rows, cols, dtype, 3 * i)
        optim[name] = {"exp_avg": shard(rows, cols, "float32", 3 * i + 1),
                       "exp_avg_sq": shard(rows, cols, "float32", 3 * i + 2),
                       "step": torch.tensor(float(i))}
    return {"model": model, "optim": {"state": optim}}


def local_tensors(state):
    """This rank's shards (and its step tensors), in a fixed order."""
    from torch.distributed.tensor import DTensor

    out = []

    def walk(v):
        if isinstance(v, dict):
            for k in sorted(v):
                walk(v[k])
        elif isinstance(v, DTensor):
            out.append(v.to_local())
        else:
            out.append(v)
    walk(state)
    return out


def raw_views(tensors):
    import torch

    return [t.detach().reshape(-1).view(torch.uint8).numpy() for t in tensors if t.numel()]


def zero_state(state) -> None:
    import torch

    with torch.no_grad():
        for t in local_tensors(state):
            t.zero_()


def check_state(state, reference) -> bool:
    import torch

    return all(torch.equal(a, b) for a, b in zip(local_tensors(state), reference))


# --- raw limits --------------------------------------------------------------------------------

def fsync_dir(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_SYNC_FILE_RANGE_WRITE = 2


def _sync_file_range():
    """libc's sync_file_range (the os module has none); ctypes releases the GIL in the call."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    fn = libc.sync_file_range
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return fn


def raw_write(path: Path, views, threads: int, direct: bool, writeback: bool = False) -> None:
    """The views laid end to end into a new file: CHUNK pieces by `threads` threads (os.pwrite
    releases the GIL), fdatasync, folder fsync. direct: O_DIRECT, each piece copied into a page-
    aligned buffer of its thread first, and each tensor's last piece padded to 4 KiB (O_DIRECT
    needs aligned offsets and lengths; the padding adds < 4 KiB per tensor). writeback (buffered):
    each piece's writeback started right after it (sync_file_range), the way ckptio's writer
    writes, so the disk works while later pieces are copied."""
    start_writeback = _sync_file_range() if writeback and not direct else None
    pieces, offset = [], 0
    for v in views:
        for b in range(0, len(v), CHUNK):
            piece = v[b:b + CHUNK]
            pieces.append((offset, piece))
            offset += (len(piece) + 4095) // 4096 * 4096 if direct else len(piece)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (os.O_DIRECT if direct else 0)
    fd = os.open(path, flags, 0o644)
    try:
        def work(t: int) -> None:
            buf = mmap.mmap(-1, CHUNK) if direct else None
            for off, piece in pieces[t::threads]:
                if direct:
                    n = len(piece)
                    padded = (n + 4095) // 4096 * 4096
                    buf[:n] = piece
                    mv = memoryview(buf)[:padded]
                else:
                    mv = memoryview(piece)
                done = 0
                while done < len(mv):
                    done += os.pwrite(fd, mv[done:], off + done)
                if start_writeback is not None:
                    start_writeback(fd, off, len(mv), _SYNC_FILE_RANGE_WRITE)

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, range(threads)))
        os.fdatasync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)


def interleaved(raws: list, saves: list, run: int) -> list:
    """One run's order: the raw writes, with the saves they bound spread between them and one
    place later every run, so that each save, like each raw write, follows a single write (a save
    after a block of writes ran up to 20% slower on a virtual disk). The rule of the C++
    benchmarks' WriteLimit::measure: save j after raw write (j * len(raws) // len(saves) + run)
    % len(raws)."""
    if not raws:
        return list(saves)
    after = [[] for _ in raws]
    for j, save in enumerate(saves):
        after[(j * len(raws) // len(saves) + run) % len(raws)].append(save)
    return [case for raw, behind in zip(raws, after) for case in [raw] + behind]


def direct_supported(folder: Path) -> bool:
    try:
        fd = os.open(folder / ".direct-probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644)
    except OSError:
        return False
    os.close(fd)
    os.unlink(folder / ".direct-probe")
    return True


def writer_threads() -> int:
    """ckptio::default_threads(): what io::AsyncWriter uses."""
    env = os.environ.get("CKPTIO_THREADS")
    if env:
        return int(env)
    return max(1, min(16, os.cpu_count() or 1))


# --- one rank ------------------------------------------------------------------------------------

class Rank:
    def __init__(self, args):
        import torch
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh

        self.args, self.torch, self.dist = args, torch, dist
        self.rank, self.world = args.rank, args.world
        dist.init_process_group("gloo", init_method=args.init, rank=self.rank,
                                world_size=self.world)
        self.mesh = init_device_mesh("cpu", (self.world,))
        self.work = Path(args.work)

    def barrier(self) -> None:
        self.dist.barrier()

    def slowest(self, seconds: float) -> float:
        out = [None] * self.world
        self.dist.all_gather_object(out, seconds)
        return max(out)

    def timed(self, fn) -> float:
        self.barrier()
        t0 = time.perf_counter()
        fn()
        return self.slowest(time.perf_counter() - t0)

    def fresh(self, name: str) -> Path:
        path = self.work / name
        if self.rank == 0:
            shutil.rmtree(path, ignore_errors=True)
        self.barrier()
        return path

    def remove(self, path: Path) -> None:
        self.barrier()
        if self.rank == 0:
            shutil.rmtree(path, ignore_errors=True)
        self.barrier()

    def finish(self, result: dict) -> None:
        if self.rank == 0:
            Path(self.args.result).write_text(json.dumps(result))
        self.barrier()
        self.dist.destroy_process_group()


def dcp_writer(path, threads: int, cache_staging: bool = False):
    import torch.distributed.checkpoint as dcp

    return dcp.FileSystemWriter(path, sync_files=True, thread_count=threads,
                                cache_staged_state_dict=cache_staging)


def ranks_text(w: int) -> str:
    return f"{w} rank" + ("s" if w > 1 else "")


def worker_save(r: Rank) -> dict:
    """Sync saves, raw write limits and async saves on this group."""
    import torch
    import torch.distributed.checkpoint as dcp

    import ckptio.dist as cd

    args = r.args
    state = make_state(args.state_bytes, r.mesh, r.world, r.rank)
    views = raw_views(local_tensors(state))
    rank_bytes = sum(len(v) for v in views)
    threads = writer_threads()
    direct = direct_supported(r.work)
    times = {k: [] for k in ["ckptio", "raw_buffered", "raw_writeback", "raw_direct"] +
             [f"dcp_t{t}" for t in DCP_THREADS]}

    # Warm-up (imports, thread pools, the first write of each kind), not timed.
    for kind in ("ckptio", "dcp"):
        path = r.fresh(f"warm-{kind}")
        if kind == "ckptio":
            cd.save(state, path)
        else:
            dcp.save(state, storage_writer=dcp_writer(path, 1))
        r.remove(path)

    def raw(direct_io: bool, writeback: bool = False):
        def run(path):
            raw_write(path / f"rank{r.rank}.bin", views, threads, direct_io, writeback)
        return run

    raws = [("raw_buffered", raw(False)), ("raw_writeback", raw(False, True))]
    if direct:
        raws.append(("raw_direct", raw(True)))
    saves = [("ckptio", lambda p: cd.save(state, p))]
    for t in DCP_THREADS:
        saves.append((f"dcp_t{t}", lambda p, t=t: dcp.save(state, storage_writer=dcp_writer(p, t))))
    if args.async_only:
        raws, saves = [], []
    for rep in range(args.runs):  # interleaved, so that drift of the disk hits every case alike
        for name, fn in interleaved(raws, saves, rep):
            path = r.fresh(f"{name}-{rep}")
            if name.startswith("raw"):
                path.mkdir(parents=True, exist_ok=True)
            times[name].append(r.timed(lambda: fn(path)))
            r.remove(path)

    # Async: the time the call blocks; each save is finished before the next measurement. The
    # background writes run their collectives on groups of their own, as both libraries ask.
    group_c = r.dist.new_group(backend="gloo")
    group_d = r.dist.new_group(backend="gloo")
    cio = cd.CheckpointIO(r.work / "cio-async", keep_n_latest=1, async_save=True,
                          process_group=r.dist.new_group(backend="gloo"))
    # DCP's own reuse of its staging memory (cache_staged_state_dict=True): one writer reused.
    cached_writer = None
    best_t = (1 if args.async_only else
              min(DCP_THREADS, key=lambda t: statistics.median(times[f"dcp_t{t}"])))
    locals_ = [t for t in local_tensors(state)]
    dst = [torch.empty_like(t) for t in locals_]
    for d, s in zip(dst, locals_):
        d.copy_(s)  # fault the pages in
    names = ["ckptio_async", "cio_async", "dcp_async", "dcp_async_cached"]
    cached_error = None
    blocked = {k: [] for k in ["memcpy"] + names}
    total = {k: [] for k in names}
    first = {}
    # The memcpy limit: the faster of torch's copy_ and memmove in 8 MiB pieces (memmove releases
    # the GIL), both by torch's threads, as ckptio's staging copy uses, measured alike.
    pieces = []
    for d, src in zip(dst, locals_):
        n = src.numel() * src.element_size()
        pieces += [(d.data_ptr() + o, src.data_ptr() + o, min(8 * MIB, n - o))
                   for o in range(0, n, 8 * MIB)]
    pool = ThreadPoolExecutor(torch.get_num_threads())
    copies = {"copy_": [], "memmove": []}
    for rep in range(args.runs + 1):
        def copy_():
            for d, src in zip(dst, locals_):
                d.copy_(src)

        def memmove():
            list(pool.map(lambda p: ctypes.memmove(*p), pieces))
        for kind, fn in (("copy_", copy_), ("memmove", memmove)):
            t = r.timed(fn)
            if rep:
                copies[kind].append(t)

        for name in list(names):
            path = r.fresh(f"{name}-{rep}")
            r.barrier()
            t0 = time.perf_counter()
            if name == "ckptio_async":
                wait = cd.async_save(state, path, group_c).result
            elif name == "cio_async":
                cio.save(model=state["model"], optimizer=state["optim"], epoch=0, step=rep,
                         global_step=rep)
                wait = cio.wait
            elif name == "dcp_async":
                wait = dcp.async_save(state, storage_writer=dcp_writer(path, best_t),
                                      process_group=group_d).result
            else:
                if cached_writer is None:
                    cached_writer = dcp_writer(path, best_t, cache_staging=True)
                try:
                    wait = dcp.async_save(state, checkpoint_id=path, storage_writer=cached_writer,
                                          process_group=group_d).result
                except RuntimeError as exc:  # it pins memory, which needs an accelerator
                    cached_error = str(exc).splitlines()[0]
                    names.remove(name)
                    r.remove(path)
                    continue
            t_block = time.perf_counter() - t0
            wait()
            t_total = time.perf_counter() - t0
            t_block, t_total = r.slowest(t_block), r.slowest(t_total)
            if rep:
                blocked[name].append(t_block)
                total[name].append(t_total)
            else:
                first[name] = t_block
            r.remove(path)
    r.remove(r.work / "cio-async")
    pool.shutdown()
    if copies["copy_"]:
        blocked["memcpy"] = min(copies.values(), key=statistics.median)
    for k in [k for k, v in blocked.items() if not v]:
        del blocked[k]
        total.pop(k, None)
    med = {k: statistics.median(v) for k, v in times.items() if v}
    return {"world": r.world, "rank_bytes": rank_bytes, "writer_threads": threads,
            "torch_threads": torch.get_num_threads(), "direct": direct, "save": med,
            "save_runs": times, "dcp_best_threads": best_t,
            "blocked": {k: statistics.median(v) for k, v in blocked.items()},
            "async_total": {k: statistics.median(v) for k, v in total.items()},
            "async_first_blocked": first, "dcp_cached_staging_error": cached_error,
            "memcpy_variants": {k: statistics.median(v) for k, v in copies.items() if v}}


def worker_prepare_load(r: Rank) -> dict:
    """Saves the checkpoints the load measurement reads (on this group's ranks)."""
    import torch.distributed.checkpoint as dcp

    import ckptio.dist as cd

    state = make_state(r.args.state_bytes, r.mesh, r.world, r.rank)
    cd.save(state, r.fresh("load-ckptio"))
    dcp.save(state, storage_writer=dcp_writer(r.fresh("load-dcp"), 1))
    r.barrier()
    return {"world": r.world}


def worker_load(r: Rank) -> dict:
    import torch.distributed.checkpoint as dcp

    import ckptio.dist as cd

    args = r.args
    state = make_state(args.state_bytes, r.mesh, r.world, r.rank)
    reference = [t.clone() for t in local_tensors(state)]
    paths = {"ckptio_load": r.work / "load-ckptio", "dcp_load": r.work / "load-dcp"}
    # Warm page cache: every file read once by its reader (also the warm-up of each library).
    ok = {}
    for name, path in paths.items():
        zero_state(state)
        if name == "ckptio_load":
            cd.load(state, path)
        else:
            dcp.load(state, checkpoint_id=path)
        ok[name] = r.slowest(0.0 if check_state(state, reference) else 1.0) == 0.0
    times = {k: [] for k in paths}
    for _ in range(args.runs):
        for name, path in paths.items():
            if name == "ckptio_load":
                times[name].append(r.timed(lambda: cd.load(state, path)))
            else:
                times[name].append(r.timed(lambda: dcp.load(state, checkpoint_id=path)))
    return {"world": r.world, "load": {k: statistics.median(v) for k, v in times.items()},
            "load_runs": times, "correct": ok}


def worker_memory(r: Rank) -> dict:
    """Peak extra RSS of one save of args.case, after a warm-up save of a small state."""
    import torch.distributed.checkpoint as dcp

    import ckptio.dist as cd

    case = r.args.case
    group = r.dist.new_group(backend="gloo") if case.endswith("async") else None
    small = make_state(4 * MIB, r.mesh, r.world, r.rank)
    state = make_state(r.args.state_bytes, r.mesh, r.world, r.rank)
    rank_bytes = sum(len(v) for v in raw_views(local_tensors(state)))

    def save(s, path):
        if case == "ckptio_sync":
            cd.save(s, path)
        elif case == "ckptio_async":
            cd.async_save(s, path, group).result()
        elif case == "dcp_save":
            dcp.save(s, storage_writer=dcp_writer(path, r.args.dcp_threads))
        elif case == "dcp_async":
            dcp.async_save(s, storage_writer=dcp_writer(path, r.args.dcp_threads),
                           process_group=group).result()
        else:
            raise SystemExit(f"unknown case {case}")

    path = r.fresh(f"mem-warm-{case}")
    save(small, path)
    r.remove(path)
    path = r.fresh(f"mem-{case}")
    trim_heap()
    r.barrier()
    reset_peak_rss()
    before = rss_bytes()
    save(state, path)
    extra = peak_rss_bytes() - before
    r.remove(path)
    out = [None] * r.world
    r.dist.all_gather_object(out, extra)
    return {"world": r.world, "case": case, "extra_bytes": max(out), "rank_bytes": rank_bytes}


WORKERS = {"save": worker_save, "prepare_load": worker_prepare_load, "load": worker_load,
           "memory": worker_memory}


# --- the launcher ------------------------------------------------------------------------------

def launch(mode: str, world: int, work: Path, state_bytes: int, runs: int, **extra) -> dict:
    """Runs `mode` on `world` fresh processes with a fresh gloo group; returns rank 0's result."""
    rendezvous = tempfile.mktemp(prefix="ckptio-bench-pg-", dir=work)
    result = Path(tempfile.mktemp(prefix="ckptio-bench-result-", dir=work))
    env = dict(os.environ)
    if world > 1:
        env.setdefault("OMP_NUM_THREADS", "1")  # as torchrun starts ranks
    procs = []
    for rank in range(world):
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", mode, "--rank", str(rank),
               "--world", str(world), "--init", f"file://{rendezvous}", "--work", str(work),
               "--state-bytes", str(state_bytes), "--runs", str(runs), "--result", str(result)]
        for k, v in extra.items():
            if isinstance(v, bool):  # a flag
                cmd += [f"--{k.replace('_', '-')}"] if v else []
            else:
                cmd += [f"--{k.replace('_', '-')}", str(v)]
        procs.append(subprocess.Popen(cmd, env=env))
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"{mode} on {world} ranks failed: exit codes {codes}")
    out = json.loads(result.read_text())
    result.unlink()
    if os.path.exists(rendezvous):
        os.unlink(rendezvous)
    return out


# --- the report --------------------------------------------------------------------------------

class Report:
    """Rows (group, name, seconds, bytes, limit, peer, note) and goals, as the C++ programs'."""

    def __init__(self):
        self.rows, self.goals, self.notes = [], [], []

    def row(self, group, name, seconds, nbytes, limit="", peer="", note=""):
        self.rows.append({"group": group, "name": name, "seconds": seconds, "bytes": nbytes,
                          "limit": limit, "peer": peer, "note": note})

    def find(self, name):
        return next((r for r in self.rows if r["name"] == name), None)

    def ratio(self, row, other_name):
        """How many times faster `row` is than the row named `other_name` (per byte)."""
        other = self.find(other_name)
        if not other_name or other is None or not row["seconds"] or not other["seconds"]:
            return None
        r = other["seconds"] / row["seconds"]
        if row["bytes"] and other["bytes"]:
            r *= row["bytes"] / other["bytes"]
        return r

    def suspect(self, row):
        r = self.ratio(row, row["limit"])
        return r is not None and r > LIMIT_TOLERANCE

    def goal_ratio(self, text, row, against, target):
        self.goals.append({"goal": text, "row": row, "against": against, "kind": "ratio at least",
                           "target": target})

    def goal_at_most(self, text, value, target, unit):
        self.goals.append({"goal": text, "value": value, "kind": "at most", "target": target,
                           "unit": unit})

    def reach(self, g):
        """For a goal against a peer: the most any code bound by the row's limit could reach
        (the peer's ratio to that limit, inverted); None when there is no such bound."""
        row, peer = self.find(g.get("row")), self.find(g.get("against"))
        if row is None or peer is None or peer["group"] != "peer" or not row["limit"]:
            return None
        limit = self.find(row["limit"])
        if limit is None:
            return None
        return self.ratio(limit, peer["name"])

    def evaluate(self, g):
        if g["kind"] == "at most":
            v = g["value"]
            return v, "not measured" if v is None else ("met" if v <= g["target"] else "NOT met")
        row = self.find(g["row"])
        if row is None:
            return None, "not measured"
        v = self.ratio(row, g["against"])
        if v is None:
            return None, "not measured"
        against = self.find(g["against"])
        if against["group"] == "limit" and v > LIMIT_TOLERANCE:
            return v, "LIMIT SUSPECT"
        if v >= g["target"]:
            return v, "met"
        reach = self.reach(g)
        if reach is not None and reach < g["target"]:
            return v, (f"NOT met; unreachable here: the limit itself is only {reach:.2f}x "
                       f"\"{g['against']}\"")
        return v, "NOT met"

    def markdown(self, title, context):
        out = [f"# bench_dist.py: {title}", ""]
        for c in context:
            out += [c, ""]
        out += ["| Group | Measurement | Time (s) | GB/s | vs limit | vs peer | Notes |",
                "|---|---|---:|---:|---|---|---|"]
        for r in self.rows:
            s = r["seconds"]
            secs = "-" if s is None else (f"{s:.5f}" if s < 0.1 else f"{s:.3f}")
            gbps = f"{r['bytes'] / s / 1e9:.2f}" if s and r["bytes"] else "-"
            vl = self.ratio(r, r["limit"])
            vp = self.ratio(r, r["peer"])
            vl = "" if vl is None else f"{vl:.2f}x {r['limit']}" + (
                " (LIMIT SUSPECT)" if self.suspect(r) else "")
            vp = "" if vp is None else f"{vp:.2f}x {r['peer']}"
            out.append(f"| {r['group']} | {r['name']} | {secs} | {gbps} | {vl} | {vp} |"
                       f" {r['note']} |")
        out += ["", "Goals (measured in this run; not asserted):", ""]
        for g in self.goals:
            v, status = self.evaluate(g)
            if g["kind"] == "at most":
                vs = "-" if v is None else f"{v:.3g} {g['unit']}"
                out.append(f"- {g['goal']}: {vs} (goal <= {g['target']} {g['unit']}) - {status}")
            else:
                vs = "-" if v is None else f"{v:.2f}x"
                out.append(f"- {g['goal']}: {vs} (goal >= {g['target']:.2f}x) - {status}")
        for r in self.rows:
            if self.suspect(r):
                x = self.ratio(r, r["limit"])
                out += ["", f"LIMIT SUSPECT: \"{r['name']}\" ran at {x:.2f}x \"{r['limit']}\"."
                        " A limit is the best raw method for the same bytes, so this means the"
                        " limit is wrong on this machine, not that ckptio beats it."]
        for n in self.notes:
            out += ["", f"Note: {n}"]
        return "\n".join(out) + "\n"

    def json(self):
        rows = []
        for r in self.rows:
            vl, vp = self.ratio(r, r["limit"]), self.ratio(r, r["peer"])
            gbps = r["bytes"] / r["seconds"] / 1e9 if r["seconds"] and r["bytes"] else None
            rows.append(dict(r, gbps=gbps, vs_limit=vl, vs_peer=vp, limit_suspect=self.suspect(r)))
        goals = []
        for g in self.goals:
            v, status = self.evaluate(g)
            goals.append(dict(g, value=v, status=status))
        return {"rows": rows, "goals": goals, "notes": self.notes}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gib", type=float, default=1.0, help="total state size (default 1 GiB)")
    p.add_argument("--quick", action="store_true", help="256 MiB instead of --gib")
    p.add_argument("--ranks", default="1,2,4", help="world sizes of the save and async sets")
    p.add_argument("--runs", type=int, default=None, help="runs per figure (default 3)")
    p.add_argument("--dir", help="where to write (default: a temp folder, removed afterwards)")
    p.add_argument("--out", help="also write the results as JSON here")
    p.add_argument("--async-only", action="store_true",
                   help="only the async rows (how long a save blocks) and their memcpy limit")
    # Internal: one rank of one measurement set.
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    p.add_argument("--world", type=int, help=argparse.SUPPRESS)
    p.add_argument("--init", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--state-bytes", type=int, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--dcp-threads", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.worker:
        r = Rank(args)
        r.finish(WORKERS[args.worker](r))
        return 0

    runs = args.runs or 3
    state_bytes = int((0.25 if args.quick else args.gib) * 2**30)
    ranks = [int(w) for w in args.ranks.split(",")]
    work = Path(tempfile.mkdtemp(prefix="ckptio-bench-dist-", dir=args.dir))
    t_start = time.perf_counter()
    try:
        sets = {}
        for w in ranks:
            print(f"== save and async on {w} rank(s)", file=sys.stderr, flush=True)
            sets[w] = launch("save", w, work, state_bytes, runs, async_only=args.async_only)
        load, memory = None, {}
        if not args.async_only:
            print("== load 4 -> 2", file=sys.stderr, flush=True)
            launch("prepare_load", 4, work, state_bytes, 1)
            load = launch("load", 2, work, state_bytes, runs)
            shutil.rmtree(work / "load-ckptio", ignore_errors=True)
            shutil.rmtree(work / "load-dcp", ignore_errors=True)
        mem_world = max(ranks)
        mem_t = sets[mem_world]["dcp_best_threads"]
        for case in (() if args.async_only else
                     ("ckptio_sync", "ckptio_async", "dcp_save", "dcp_async")):
            print(f"== peak memory: {case} on {mem_world} rank(s)", file=sys.stderr, flush=True)
            memory[case] = launch("memory", mem_world, work, state_bytes, 1, case=case,
                                  dcp_threads=mem_t)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - t_start

    import torch

    rep = Report()
    total_bytes = None
    for w in ([] if args.async_only else ranks):
        s = sets[w]
        nbytes = s["rank_bytes"] * w  # every rank holds an equal share (plus its step tensors)
        total_bytes = total_bytes or nbytes
        sv, bt = s["save"], s["dcp_best_threads"]
        raw_kinds = [k for k in ("raw_buffered", "raw_writeback", "raw_direct") if k in sv]
        best_raw = min(raw_kinds, key=lambda k: sv[k])
        other = [f"{k.split('_')[1]} {sv[k]:.3f} s" for k in raw_kinds if k != best_raw]
        rk = ranks_text(w)
        lim = f"raw write, {rk}"
        peer = f"dcp.save, {rk}"
        rep.row("limit", lim, sv[best_raw], nbytes,
                note=f"parallel os.pwrite, {s['writer_threads']} threads x 8 MiB per rank, "
                     f"{best_raw.split('_')[1]}, fdatasync + folder fsync"
                     + (f" ({', '.join(other)})" if other else ""))
        rep.row("ckptio", f"ckptio.dist.save sync, {rk}", sv["ckptio"], nbytes, lim, peer,
                "durable: fsync, xxh3 checksums, commit")
        rep.row("peer", peer, sv[f"dcp_t{bt}"], nbytes, lim,
                note=f"FileSystemWriter(sync_files=True, thread_count={bt}), best of " +
                     ", ".join(f"t={t} {sv[f'dcp_t{t}']:.3f} s" for t in DCP_THREADS))
        rep.goal_ratio(f"sync save, {rk}, vs dcp.save", f"ckptio.dist.save sync, {rk}",
                       peer, 1.5)
        rep.goal_ratio(f"sync save, {rk}, vs the raw write limit",
                       f"ckptio.dist.save sync, {rk}", lim, 0.9)
    for w in ranks:
        s = sets[w]
        b, tot, first = s["blocked"], s["async_total"], s["async_first_blocked"]
        nbytes, rk = s["rank_bytes"], ranks_text(w)
        lim = f"memcpy of the shard, {rk}"
        peer = f"dcp.async_save blocks, {rk}"
        cio = f"ckptio.dist.CheckpointIO async save blocks, {rk}"

        def more(k):
            return f"whole save {tot[k]:.3f} s; first call {first[k]:.3f} s"
        rep.row("limit", lim, b["memcpy"], nbytes,
                note="into pre-faulted memory, the faster of torch copy_ by "
                     f"{s['torch_threads']} torch thread(s) "
                     f"({s['memcpy_variants']['copy_']:.5f} s) and memmove in 8 MiB pieces by as "
                     f"many threads ({s['memcpy_variants']['memmove']:.5f} s)")
        rep.row("ckptio", cio, b["cio_async"], nbytes, lim, peer,
                f"copy into its staging memory, reused from the previous save; {more('cio_async')}")
        rep.row("ckptio", f"ckptio.dist.async_save blocks, {rk}", b["ckptio_async"], nbytes,
                lim, peer, f"copy into fresh memory; {more('ckptio_async')}")
        rep.row("peer", peer, b["dcp_async"], nbytes, lim,
                note=f"FileSystemWriter staging (default), thread_count={s['dcp_best_threads']};"
                     f" {more('dcp_async')}")
        if "dcp_async_cached" in b:
            rep.row("peer", f"dcp.async_save blocks, cached staging, {rk}", b["dcp_async_cached"],
                    nbytes, lim, note="FileSystemWriter(cache_staged_state_dict=True) reused; "
                    + more("dcp_async_cached"))
        elif s["dcp_cached_staging_error"] and w == ranks[0]:
            rep.notes.append("dcp.async_save with FileSystemWriter(cache_staged_state_dict=True) "
                             "(DCP's reuse of its staging memory) was not measured: "
                             + s["dcp_cached_staging_error"])
        rep.goal_ratio(f"async save blocks, {rk}, vs dcp.async_save (CheckpointIO)", cio, peer, 5.0)
        rep.goal_at_most(f"async save blocks, {rk}, as a multiple of the shard's memcpy "
                         "(CheckpointIO)", b["cio_async"] / b["memcpy"], 1.2, "x memcpy")
    if load is not None:
        ld = load["load"]
        rep.row("ckptio", "ckptio.dist.load 4 -> 2", ld["ckptio_load"], total_bytes,
                peer="dcp.load 4 -> 2", note="warm cache; loaded values checked: "
                + ("correct" if load["correct"]["ckptio_load"] else "WRONG"))
        rep.row("peer", "dcp.load 4 -> 2", ld["dcp_load"], total_bytes,
                note="warm cache; loaded values checked: "
                + ("correct" if load["correct"]["dcp_load"] else "WRONG"))
        rep.goal_ratio("load 4 -> 2 vs dcp.load", "ckptio.dist.load 4 -> 2", "dcp.load 4 -> 2",
                       1.5)
    mw = max(ranks)
    labels = {"ckptio_sync": "ckptio.dist.save sync", "ckptio_async": "ckptio.dist.async_save",
              "dcp_save": "dcp.save", "dcp_async": "dcp.async_save"}
    for case, m in memory.items():
        staging = m["rank_bytes"] if case.endswith("async") else 0
        extra = m["extra_bytes"] - staging
        rep.row("memory", f"peak extra RSS per rank, {labels[case]}, {ranks_text(mw)}", None, 0,
                note=f"{extra / MIB:.1f} MiB" + (
                    f" beyond the {staging / MIB:.1f} MiB staging copy "
                    f"({m['extra_bytes'] / MIB:.1f} MiB in all)" if staging else ""))
        if case.startswith("ckptio"):
            rep.goal_at_most(f"peak extra memory per rank, {labels[case]}"
                             + (" (beyond the staging copy)" if staging else ""),
                             extra / MIB, 64, "MiB")
    rep.notes.append("Times are the slowest rank's, after a barrier; each set ran in fresh "
                     "processes with a fresh gloo group. Ranks > 1 ran with OMP_NUM_THREADS=1.")
    rep.notes.append(f"The raw write limit is Python os.pwrite by threads (GIL released in the "
                     f"call), not the C++ raw baseline; O_DIRECT "
                     f"{'measured' if sets[ranks[0]]['direct'] else 'refused by the file system'}.")
    if load is not None and not all(load["correct"].values()):
        rep.notes.append("A load returned wrong values: its time means nothing.")
    if total_bytes is None:
        total_bytes = sets[ranks[0]]["rank_bytes"] * ranks[0]
    title = (f"ckptio.dist vs PyTorch DCP, {total_bytes / MIB:.0f} MiB sharded state, ranks "
             f"{','.join(map(str, ranks))}, median of {runs} runs")
    context = [f"torch {torch.__version__}, gloo, {os.cpu_count()} CPUs; the whole run took "
               f"{elapsed:.0f} s. Per rank: ckptio writer threads "
               f"{sets[ranks[0]]['writer_threads']}."]
    if memory_note():
        context.append(memory_note())
    md = rep.markdown(title, context)
    print(md)
    if args.out:
        data = {"program": "bench_dist.py", "title": title, "context": context,
                "bytes": total_bytes, "runs": runs, "ranks": ranks, "torch": torch.__version__,
                "sets": {str(w): s for w, s in sets.items()}, "load": load, "memory": memory}
        data.update(rep.json())
        Path(args.out).write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
