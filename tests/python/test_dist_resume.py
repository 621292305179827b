"""A training job killed with SIGKILL in the middle of a checkpoint save resumes from the newest
committed checkpoint exactly: an FSDP2-sharded MLP with AdamW, an LR schedule, an EMA kept as ZeRO
flat partitions and a resumable sampler (tests/python/_train_loop.py), checkpointed with
ckptio.dist.CheckpointIO on 2 gloo ranks, sync and async.

The kill is deterministic: one rank SIGKILLs itself at a fixed collective of the save (after its
files are written, before the commit). The other rank must fail, not hang; the interrupted
checkpoint must not be visible and the one before it must be. Resumed on 2 ranks, the run ends
with the same bytes as an uninterrupted run; resumed on 1 rank, it loads the 2-rank checkpoint
(resharded) bit-exactly and trains on."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch.distributed.fsdp")
sys.path.insert(0, str(Path(__file__).parent))
import _train_loop as loop  # noqa: E402
from _dist_launch import start_ranks  # noqa: E402

# Hang guards only (a rank waiting for a dead peer is bounded by the process group's timeout,
# CKPTIO_TEST_PG_TIMEOUT_S below); never reached by a run that works.
PROCESS_TIMEOUT_S = 300


def launch(mode: str, world: int, exp: Path, variant: str) -> list:
    """Runs `mode` of _train_loop.py on `world` ranks; [(exit code, output)] in rank order."""
    rdv = exp.parent / "rdv"
    rdv.mkdir(exist_ok=True)
    init_file = rdv / f"init-{mode}-{world}-{len(list(rdv.iterdir()))}"
    env = dict(os.environ, OMP_NUM_THREADS="1", CKPTIO_TEST_PG_TIMEOUT_S="60")
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    ranks = start_ranks(loop.__file__, lambda r: [mode, r, world, init_file, exp, variant], world,
                        rdv / "logs", env)
    results = []
    try:
        for rank in ranks:
            results.append(rank.wait(timeout=PROCESS_TIMEOUT_S))
    finally:
        for rank in ranks:
            rank.kill()
    return results


def report(results) -> str:
    return "\n".join(f"--- rank {r} (exit {code}) ---\n{out}" for r, (code, out) in
                     enumerate(results))


def run_ok(mode: str, world: int, exp: Path, variant: str) -> None:
    results = launch(mode, world, exp, variant)
    assert all(code == 0 for code, _ in results), report(results)


def committed(exp: Path) -> list:
    from ckptio.dist import CheckpointIO

    return [os.path.basename(p) for p in CheckpointIO(exp).list()]


@pytest.mark.parametrize("variant", ["sync", "async"])
def test_sigkill_mid_save_then_resume(tmp_path, variant):
    exp = tmp_path / "exp"
    results = launch("crash", 2, exp, variant)
    killed = 0 if variant == "async" else 1
    survivor = 1 - killed
    text = report(results)
    assert results[killed][0] == -signal.SIGKILL, text
    assert "KILL rank" in results[killed][1], text
    assert results[survivor][0] == 3, text  # failed with an error, did not hang
    if variant == "sync":  # in the save's own collective: ckptio's error
        assert f"SURVIVOR rank {survivor}: ckptio" in results[survivor][1], text

    # Step 6's save never committed: no folder of that name; step 4's is the newest.
    crashed = f"epoch1-global_step{loop.CRASH_STEP}"  # the sampler is in epoch 1 by then
    assert not (exp / crashed).exists()
    assert committed(exp) == ["epoch0-global_step4", "epoch0-global_step2"]
    leftovers = [p for p in os.listdir(exp) if p.startswith("." + crashed)]
    if variant == "async":
        # The coordinator died holding the temp folder: the files are there, the commit is not.
        assert len(leftovers) == 1, os.listdir(exp)
        assert any(f.startswith("shard-") for f in os.listdir(exp / leftovers[0]))
    else:
        assert leftovers == []  # the surviving coordinator removed its temp folder

    if variant == "sync":  # from the same checkpoint, before the 2-rank run saves newer ones
        run_ok("resume1", 1, exp, variant)
    run_ok("resume", 2, exp, variant)  # checks bit equality with an uninterrupted run inside
    assert committed(exp)[0] == f"epoch1-global_step{loop.STEPS}"
    # The resumed run's first committed save removed the crashed save's temp folder.
    assert [p for p in os.listdir(exp) if p.startswith(".")] == [], os.listdir(exp)
