"""Runs a scenario of _dist_worker.py on WORLD ranks (one process each, gloo on CPU through a
file:// rendezvous) and fails with every rank's output when any rank exits non-zero.

Rank processes start from a fork server that has imported torch once for the whole pytest session
(multiprocessing's "forkserver"): each rank is still a fresh process of its own, with its own
process group, environment and exit status (a signal shows as -signum), but it does not pay
torch's import (about 1.8 CPU-seconds) again. ckptio itself is not preloaded: a rank imports it
only if its script does (the stock-PyTorch readers check that they never do)."""

from __future__ import annotations

import atexit
import io
import multiprocessing
import os
import runpy
import sys
from multiprocessing import forkserver
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_dist_worker.py"

# What every rank script imports anyway; never ckptio (see above).
PRELOAD = ["numpy", "torch", "torch.distributed", "torch.distributed.tensor"]
# Read once, when the fork server loads torch and OpenMP; the ranks inherit it.
SERVER_ENV = {"OMP_NUM_THREADS": "1"}

_context = None


def _fork_server():
    global _context
    if _context is None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        saved = dict(os.environ)
        os.environ.update(SERVER_ENV)
        try:
            forkserver.ensure_running()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        _context = context
    return _context


def _run_script(script: str, args: list, env: dict, log: str) -> None:
    """In the rank process: `python script args...` with `env`, output into `log`."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    # Unbuffered, as for a child whose output is a pipe read after it exits: a rank that ends by
    # os._exit or SIGKILL loses nothing it printed.
    sys.stdout = io.TextIOWrapper(open(1, "wb", buffering=0, closefd=False), write_through=True)
    sys.stderr = io.TextIOWrapper(open(2, "wb", buffering=0, closefd=False), write_through=True)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(script))
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        atexit._run_exitfuncs()  # as the interpreter would at exit


class Rank:
    """One rank process: `python script args...` started from the fork server."""

    def __init__(self, script, args, env, log: Path):
        self.log = Path(log)
        self.process = _fork_server().Process(
            target=_run_script, args=(str(script), [str(a) for a in args], dict(env), str(log)))
        self.process.start()

    def wait(self, timeout: float):
        """(exit status, output); a hang guard kills the rank after `timeout` seconds."""
        self.process.join(timeout)
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join()
            raise TimeoutError(f"{self.log.name}: still running after {timeout} s")
        return self.process.exitcode, self.log.read_text(errors="replace")

    def kill(self):
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join()


def start_ranks(script, args_of_rank, world: int, log_dir: Path, env) -> list:
    """Starts `script` on ranks 0..world-1 with args_of_rank(r); their output goes to log_dir."""
    log_dir.mkdir(parents=True, exist_ok=True)
    count = len(list(log_dir.iterdir()))
    return [Rank(script, args_of_rank(r), env, log_dir / f"{count}-rank{r}.log")
            for r in range(world)]


def run_script_on_ranks(script, args_of_rank, world: int, log_dir: Path, env, what: str) -> None:
    """Runs `script` on ranks 0..world-1 and fails with every rank's output when any rank exits
    non-zero; `what` names the run in that message."""
    ranks = start_ranks(script, args_of_rank, world, log_dir, env)
    results = []
    try:
        for rank in ranks:
            # A hang guard only (the collectives' own timeout is the real bound), not a measurement.
            results.append(rank.wait(timeout=900))
    finally:
        for rank in ranks:
            rank.kill()
    failed = [r for r, (code, _) in enumerate(results) if code != 0]
    if failed:
        text = "\n".join(f"--- rank {r} (exit {code}) ---\n{out}"
                         for r, (code, out) in enumerate(results))
        raise AssertionError(f"{what} on {world} ranks: ranks {failed} failed\n{text}")


def run_ranks(scenario: str, world: int, path: Path, rendezvous_dir: Path,
              extra_env=None) -> None:
    rendezvous_dir.mkdir(parents=True, exist_ok=True)
    init_file = rendezvous_dir / f"init-{scenario}-{world}-{len(list(rendezvous_dir.iterdir()))}"
    env = dict(os.environ)
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra_env or {})
    run_script_on_ranks(WORKER, lambda r: [scenario, r, world, init_file, path], world,
                        rendezvous_dir / "logs", env, scenario)
