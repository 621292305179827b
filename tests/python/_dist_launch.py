"""Runs a scenario of _dist_worker.py on WORLD ranks (one process each, gloo on CPU through a
file:// rendezvous) and fails with every rank's output when any rank exits non-zero."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_dist_worker.py"


def run_ranks(scenario: str, world: int, path: Path, rendezvous_dir: Path,
              extra_env=None) -> None:
    rendezvous_dir.mkdir(parents=True, exist_ok=True)
    init_file = rendezvous_dir / f"init-{scenario}-{world}-{len(list(rendezvous_dir.iterdir()))}"
    env = dict(os.environ)
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra_env or {})
    procs = [subprocess.Popen([sys.executable, str(WORKER), scenario, str(r), str(world),
                               str(init_file), str(path)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for r in range(world)]
    outputs = []
    for p in procs:
        # A hang guard only (the collectives' own timeout is the real bound), not a measurement.
        out, _ = p.communicate(timeout=900)
        outputs.append(out)
    failed = [r for r, p in enumerate(procs) if p.returncode != 0]
    if failed:
        text = "\n".join(f"--- rank {r} (exit {procs[r].returncode}) ---\n{outputs[r]}"
                         for r in range(world))
        raise AssertionError(f"{scenario} on {world} ranks: ranks {failed} failed\n{text}")
