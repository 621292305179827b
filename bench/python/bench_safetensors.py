#!/usr/bin/env python3
"""ckptio.safetensors against the safetensors package and against the raw read limit.

Not a test: absolute numbers depend on the machine. Every case runs in a fresh process (so that
peak memory is that case's alone), a few times; the table shows the best time and the largest
peak. "extra" memory is the process's peak RSS minus what it held before the call, minus the
tensors a load returns (which a load has to allocate; for the package's lazily mapped tensors,
the page-cache pages they map count as RSS).

save_file is measured three ways: into the page cache without fsync (as the package writes), with
direct_io=True (O_DIRECT: past the page cache to the device, no fsync, so at least the package's
durability), and fsynced (ckptio's default). The save cases run interleaved, one process each.

    PYTHONPATH=build/release/python .venv/bin/python bench/python/bench_safetensors.py [--quick]
        [--only save|load]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from machine_note import memory_note

MIB = 1 << 20


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> None:
    # Linux: "5" resets VmHWM to the current RSS, so that imports do not count as the case's peak.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def touch(tensors) -> int:
    """Reads one byte per 4 KiB page: the package's load_file maps the file lazily, so its cost
    shows only when the tensors are used."""
    import torch

    total = 0
    for t in tensors:
        if t.numel():
            total += int(t.reshape(-1).view(torch.uint8)[::4096].sum())
    return total


def make_state(total_bytes: int):
    """Tensors of 256 B .. 64 MiB (F32/BF16/F16/I64), as in a model: many small, most bytes in big."""
    import torch

    dtypes = [torch.float32, torch.bfloat16, torch.float16, torch.int64]
    sizes = [64 * MIB, 16 * MIB, 4 * MIB, 1 * MIB, 64 << 10, 256]
    state, used, i = {}, 0, 0
    while used < total_bytes:
        size = min(sizes[i % len(sizes)], total_bytes - used)
        dtype = dtypes[i % len(dtypes)]
        itemsize = torch.empty((), dtype=dtype).element_size()
        numel = max(size // itemsize, 1)
        state[f"layer.{i}.weight"] = torch.arange(numel, dtype=torch.int32).to(dtype)
        used += numel * itemsize
        i += 1
    return state


def raw_sequential_read(path: str):
    """One readinto of the whole file into one fresh buffer."""
    import numpy as np
    import torch

    buf = torch.empty(os.path.getsize(path), dtype=torch.uint8).numpy()  # load_file's allocator
    with open(path, "rb", buffering=0) as f:
        view, done = memoryview(buf), 0
        while done < len(buf):
            n = f.readinto(view[done:])
            if not n:
                raise OSError("short read")
            done += n
    return torch.from_numpy(buf)


def raw_parallel_read(path: str, threads: int = 16, chunk: int = 8 * MIB):
    """The file's bytes read with parallel preads into one fresh buffer."""
    import numpy as np

    import torch

    size = os.path.getsize(path)
    buf = torch.empty(size, dtype=torch.uint8).numpy()  # the allocator load_file's tensors use
    view = memoryview(buf)
    fd = os.open(path, os.O_RDONLY)
    try:
        share = -(-size // threads)

        def work(t: int) -> None:
            begin, end = t * share, min(size, (t + 1) * share)
            while begin < end:
                n = os.preadv(fd, [view[begin:min(end, begin + chunk)]], begin)
                if n <= 0:
                    raise OSError("short read")
                begin += n

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, range(threads)))
    finally:
        os.close(fd)
    import torch

    return torch.from_numpy(buf)


def run_case(case: str, path: str, state_bytes: int, out_path: str) -> dict:
    """One measurement, in this (fresh) process."""
    import torch  # noqa: F401  (imported before the baseline so its memory is not counted)

    import safetensors.torch as st
    from ckptio import safetensors as cs

    state = make_state(state_bytes) if case.startswith("save") else None
    if os.path.exists(out_path):
        os.remove(out_path)
    returned = 0
    reset_peak_rss()
    before = rss_bytes()
    start = time.perf_counter()
    if case == "load_ckptio":
        result = cs.load_file(path)
        touch(result.values())
    elif case == "load_ckptio_pread":
        result = cs.load_file(path, backend="pread")
        touch(result.values())
    elif case == "load_package_pread":
        result = st.load_file(path, backend="pread")
        touch(result.values())
    elif case == "load_package":
        result = st.load_file(path)
        touch(result.values())
    elif case == "load_raw_parallel":
        result = raw_parallel_read(path)
        touch([result])
    elif case == "load_raw_sequential":
        result = raw_sequential_read(path)
        touch([result])
    elif case == "save_ckptio":
        result = cs.save_file(state, out_path, sync=False)
    elif case == "save_ckptio_sync":
        result = cs.save_file(state, out_path)
    elif case == "save_ckptio_direct":
        result = cs.save_file(state, out_path, sync=False, direct_io=True)
    elif case == "save_package":
        result = st.save_file(state, out_path)
    else:
        raise SystemExit(f"unknown case {case}")
    seconds = time.perf_counter() - start
    if case.startswith("load"):
        returned = state_bytes
        if isinstance(result, dict):
            returned = sum(t.numel() * t.element_size() for t in result.values())
    extra = peak_rss_bytes() - before - returned
    return {"case": case, "seconds": seconds, "extra_bytes": max(extra, 0)}


def measure(case: str, path: str, state_bytes: int, out_path: str, repeat: int) -> dict:
    runs = []
    for _ in range(repeat):
        proc = subprocess.run(
            [sys.executable, __file__, "--case", case, "--path", path, "--out-file", out_path,
             "--state-bytes", str(state_bytes)],
            check=True, capture_output=True, text=True)
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {"case": case, "seconds": min(r["seconds"] for r in runs),
            "extra_bytes": max(r["extra_bytes"] for r in runs), "runs": repeat}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256 MiB and 2 runs per case")
    parser.add_argument("--gib", type=float, default=None, help="state size (default 2 GiB)")
    parser.add_argument("--repeat", type=int, default=None, help="runs per case (default 3)")
    parser.add_argument("--dir", default=None, help="where the files go (default: a temp folder)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--only", choices=("load", "save"), default=None,
                        help="run only the load or only the save cases")
    # Internal: one case in a fresh process.
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--out-file", help=argparse.SUPPRESS)
    parser.add_argument("--state-bytes", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.case:
        print(json.dumps(run_case(args.case, args.path, args.state_bytes, args.out_file)))
        return

    gib = args.gib if args.gib is not None else (0.25 if args.quick else 2.0)
    repeat = args.repeat or (2 if args.quick else 3)
    state_bytes = int(gib * (1 << 30))
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="ckptio-bench-") as folder:
        path = os.path.join(folder, "model.safetensors")
        out_path = os.path.join(folder, "saved.safetensors")
        from ckptio import safetensors as cs

        state = make_state(state_bytes)
        cs.save_file(state, path, sync=False)
        count = len(state)
        del state
        file_bytes = os.path.getsize(path)
        with open(path, "rb") as f:  # warm the page cache
            while f.read(64 * MIB):
                pass

        results = {}
        load_cases = ["load_raw_parallel", "load_raw_sequential", "load_ckptio_pread",
                      "load_package_pread", "load_ckptio", "load_package"]
        save_cases = ["save_package", "save_ckptio", "save_ckptio_direct", "save_ckptio_sync"]
        cases = {"load": load_cases, "save": save_cases}.get(args.only, load_cases + save_cases)
        # Save cases interleaved run by run: how fast new page-cache memory comes drifts with the
        # machine's state (in a VM it may have to come from the host), and interleaving spreads
        # that drift over every case instead of giving it to whichever case ran first.
        runs = {case: [] for case in cases}
        for _ in range(repeat):
            for case in cases:
                runs[case].append(measure(case, path, state_bytes, out_path, 1))
                if os.path.exists(out_path):
                    os.remove(out_path)
        for case, rs in runs.items():
            results[case] = {"case": case, "seconds": min(r["seconds"] for r in rs),
                             "extra_bytes": max(r["extra_bytes"] for r in rs), "runs": repeat,
                             "all_seconds": [r["seconds"] for r in rs]}
        if "load_raw_parallel" in results:
            # The limit is the faster of the two plain ways to read the bytes into new memory.
            results["load_raw_limit"] = min(results["load_raw_parallel"],
                                            results["load_raw_sequential"],
                                            key=lambda r: r["seconds"])

    def row(label: str, case: str, note: str = "") -> None:
        r = results[case]
        gbps = file_bytes / r["seconds"] / 1e9
        print(f"  {label:<34}{r['seconds']:8.3f} s {gbps:6.2f} GB/s  extra {r['extra_bytes'] / MIB:7.1f} MiB"
              f"{'  ' + note if note else ''}")

    def ratio(a: str, b: str) -> float:
        return results[b]["seconds"] / results[a]["seconds"]

    print(f"workload: {file_bytes / (1 << 30):.2f} GiB in {count} tensors (256 B .. 64 MiB;"
          f" F32/BF16/F16/I64); best of {repeat} fresh processes; GB = 1e9 bytes")
    if memory_note():
        print(memory_note())
    if "load_package" in results:
        print("load_file(backend=\"pread\"), warm page cache, into new memory, then one byte read per page:")
        row("raw: parallel pread (16 threads)", "load_raw_parallel")
        row("raw: one sequential read", "load_raw_sequential")
        row("ckptio.safetensors", "load_ckptio_pread",
            f"{ratio('load_ckptio_pread', 'load_raw_limit'):.2f}x the faster raw (goal >= 0.90x), "
            f"{ratio('load_ckptio_pread', 'load_package_pread'):.2f}x safetensors (goal >= 1.50x)")
        row("safetensors.torch", "load_package_pread")
        print("load_file(backend=\"mmap\") (the default: lazily mapped), then one byte read per page:")
        row("ckptio.safetensors", "load_ckptio",
            f"{ratio('load_ckptio', 'load_package'):.2f}x safetensors")
        row("safetensors.torch", "load_package")
    if "save_package" in results:
        # Both writers hand the tensors' own memory to write(2) (safetensors 0.8 writes from the
        # tensors' pointers too): the buffered rows are bound by the kernel's copy into new
        # page-cache memory, the same for both.
        print("save_file, no fsync (as the package); each case's times in run order:")
        row("ckptio.safetensors, page cache", "save_ckptio",
            f"{ratio('save_ckptio', 'save_package'):.2f}x safetensors (goal >= 1.30x; extra goal < 64 MiB)")
        row("ckptio, direct_io=True", "save_ckptio_direct",
            f"{ratio('save_ckptio_direct', 'save_package'):.2f}x safetensors; O_DIRECT: the bytes"
            " reach the device, past the page cache (at least the package's durability)")
        row("safetensors.torch, page cache", "save_package")
        row("ckptio.safetensors, fsynced (default)", "save_ckptio_sync")
        for case in save_cases:
            print(f"    {case}: " + ", ".join(f"{t:.3f}" for t in results[case]["all_seconds"]))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"file_bytes": file_bytes, "tensors": count, "repeat": repeat,
                       "memory_note": memory_note(),
                       "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
