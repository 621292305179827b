"""One rank of the crash-and-resume tests (test_dist_resume.py):
`python _train_loop.py MODE RANK WORLD INIT_FILE EXP_DIR sync|async`.

A deterministic training loop: a small MLP sharded with FSDP2 (`fully_shard` on a CPU mesh, gloo),
AdamW, a linear warm-up schedule, an EMA kept as ZeRO flat partitions (as Open-Sora's
`model_sharding` keeps it) and a resumable sampler, checkpointed with ckptio.dist.CheckpointIO
every SAVE_EVERY steps. Nothing random is left unseeded and CPU kernels are deterministic, so two
runs on the same number of ranks from the same state produce the same bytes.

MODE:
- crash: trains with checkpoints; one rank SIGKILLs itself inside the save of step CRASH_STEP, at a
  fixed collective of the save (see _kill_inside_save). The killed rank dies with -9, the other
  rank must fail (exit 3, its error printed) instead of hanging.
- resume: on the same ranks, first an uninterrupted reference run to STEPS (no checkpoints), then
  a fresh run resumed from the newest committed checkpoint and trained to STEPS: its state must
  equal the reference byte for byte.
- resume1: on 1 rank, loads the checkpoint saved on 2 (resharded), checks every loaded tensor
  against the full tensors the 2 ranks held when they saved it, then trains a few more steps.

Each rank dumps its local state (torch.save, test data only) after every save it returned from,
to EXP_DIR/../dumps, so resume1 has the saved state to compare with.
"""

from __future__ import annotations

import datetime
import os
import signal
import sys
import traceback

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _dist_worker import same  # noqa: E402

STEPS = 8
SAVE_EVERY = 2
CRASH_STEP = 6  # the save of this step is killed; step 4's is the newest committed one
RESUME_STEP = 4
EPOCH_SAMPLES = 40  # 5 steps of 2x4 samples: the epoch rolls over inside the run
BATCH = 4  # samples per rank and step
FEATURES, HIDDEN, OUT = 8, 32, 5  # 5 output rows: uneven FSDP shards (3 + 2) on 2 ranks
EMA_DECAY = 0.9


class ResumableSampler:
    """Rank r takes its slice of each global batch of a seeded permutation of the epoch.

    `epoch` and `consumed` (samples of the epoch consumed by all ranks) are equal on every rank;
    `last` (the indices this rank drew last) differs between ranks, so ckptio stores it per
    rank."""

    def __init__(self, rank: int, world: int, seed: int = 17):
        self.rank, self.world, self.seed = rank, world, seed
        self.epoch, self.consumed, self.last = 0, 0, []

    def next_indices(self) -> torch.Tensor:
        if self.consumed + BATCH * self.world > EPOCH_SAMPLES:
            self.epoch, self.consumed = self.epoch + 1, 0
        perm = torch.randperm(EPOCH_SAMPLES, generator=torch.Generator().manual_seed(
            self.seed + self.epoch))
        begin = self.consumed + self.rank * BATCH
        idx = perm[begin:begin + BATCH]
        self.consumed += BATCH * self.world
        self.last = idx.tolist()
        return idx

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "consumed": self.consumed,
                "last": self.last}

    def load_state_dict(self, sd: dict) -> None:
        self.seed, self.epoch, self.consumed = sd["seed"], sd["epoch"], sd["consumed"]
        self.last = sd.get("last", [])


class GlobalPosition:
    """The world-size independent part of a sampler's state: a per-rank value saved on 2 ranks
    has no meaning on 1 (ckptio raises MismatchError for it), so a run on another world size
    restores the epoch and position only."""

    def __init__(self, sampler: ResumableSampler):
        self.sampler = sampler

    def state_dict(self) -> dict:
        return {k: v for k, v in self.sampler.state_dict().items() if k != "last"}

    def load_state_dict(self, sd: dict) -> None:
        self.sampler.load_state_dict(sd)


def dataset():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(EPOCH_SAMPLES, FEATURES, generator=g)
    y = torch.randn(EPOCH_SAMPLES, OUT, generator=g)
    return x, y


class Run:
    """Model, optimizer, scheduler, EMA and sampler of one rank."""

    def __init__(self, mesh, rank: int, world: int, seed: int):
        from torch.distributed.fsdp import fully_shard

        import ckptio.dist as cd

        self.rank, self.world = rank, world
        torch.manual_seed(seed)  # the same full weights on every rank, then sharded
        self.model = torch.nn.Sequential(torch.nn.Linear(FEATURES, HIDDEN), torch.nn.Tanh(),
                                         torch.nn.Linear(HIDDEN, OUT))
        fully_shard(self.model[0], mesh=mesh)
        fully_shard(self.model[2], mesh=mesh)
        fully_shard(self.model, mesh=mesh)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-2, weight_decay=0.1)
        self.sched = torch.optim.lr_scheduler.LinearLR(self.opt, start_factor=0.25,
                                                       total_iters=5)
        with torch.no_grad():
            self.ema = {name: cd.zero_partition(p.full_tensor(), rank, world)
                        for name, p in self.model.named_parameters()}
        self.sampler = ResumableSampler(rank, world)
        self.data = dataset()
        self.step = 0

    def train_step(self) -> float:
        import ckptio.dist as cd

        idx = self.sampler.next_indices()
        x, y = self.data[0][idx], self.data[1][idx]
        loss = torch.nn.functional.mse_loss(self.model(x), y)
        loss.backward()
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                part = cd.zero_partition(p.full_tensor(), self.rank, self.world).tensor
                self.ema[name].tensor.mul_(EMA_DECAY).add_(part, alpha=1 - EMA_DECAY)
        self.step += 1
        return float(loss.detach())

    def init_optimizer_state(self) -> None:
        """AdamW's state exists only after a step, and a load fills existing state in place: one
        step with zero gradients and lr 0 creates it without changing a weight (as
        torch.distributed.checkpoint.state_dict does)."""
        for p in self.model.parameters():
            p.grad = torch.zeros_like(p)
        lrs = [g["lr"] for g in self.opt.param_groups]
        for g in self.opt.param_groups:
            g["lr"] = 0.0
        self.opt.step()
        for g, lr in zip(self.opt.param_groups, lrs):
            g["lr"] = lr
        self.opt.zero_grad(set_to_none=True)

    def objects(self, sampler=None) -> dict:
        return {"model": self.model, "ema": self.ema, "optimizer": self.opt,
                "lr_scheduler": self.sched, "sampler": sampler or self.sampler}

    def local_state(self) -> dict:
        """This rank's bytes of everything a checkpoint holds: local shards and partitions."""
        def local(t):
            return (t.to_local() if hasattr(t, "to_local") else t).detach().clone()

        out = {"step": self.step, "sampler": self.sampler.state_dict(),
               "sched": self.sched.state_dict(),
               "param_groups": self.opt.state_dict()["param_groups"]}
        for k, v in self.model.state_dict().items():
            out[f"model.{k}"] = local(v)
        for pid, st in self.opt.state_dict()["state"].items():
            for k, v in st.items():
                out[f"optim.{pid}.{k}"] = local(v)
        for k, v in self.ema.items():
            out[f"ema.{k}"] = v.tensor.clone()
        return out


def check_same_state(got: dict, want: dict, what: str) -> None:
    assert sorted(got) == sorted(want), (what, sorted(got), sorted(want))
    for k, v in want.items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(got[k], v), f"{what}: {k} differs"
            same(got[k], v, f"{what}: {k}")  # bytes too (torch.equal takes -0.0 for 0.0)
        else:
            assert got[k] == v, (what, k, got[k], v)


def dumps_dir(exp_dir: str) -> str:
    return os.path.join(os.path.dirname(exp_dir), "dumps")


def dump(run: Run, exp_dir: str) -> None:
    os.makedirs(dumps_dir(exp_dir), exist_ok=True)
    torch.save(run.local_state(), os.path.join(dumps_dir(exp_dir),
                                               f"step{run.step}-rank{run.rank}.pt"))


def read_dump(exp_dir: str, step: int, rank: int) -> dict:
    return torch.load(os.path.join(dumps_dir(exp_dir), f"step{step}-rank{rank}.pt"),
                      weights_only=True)


class _KillAt:
    """The communicator a save runs its collectives on, with one rank SIGKILLing itself at a fixed
    collective of the core's protocol: all_gather 1 (agree on the folder), broadcast (its temp
    path), [every rank writes its files], all_gather 2 (agree on the files), all_gather 3 (the
    coordinator gathers the reports, then writes the index and manifest and commits),
    all_gather 4 (agree on the commit)."""

    def __init__(self, comm, gather_no: int, after: bool):
        self.comm, self.gather_no, self.after = comm, gather_no, after
        self.timeout_ms = comm.timeout_ms
        self.gathers, self.temp = 0, None

    def rank(self):
        return self.comm.rank()

    def size(self):
        return self.comm.size()

    def broadcast(self, data, root):
        out = self.comm.broadcast(data, root)
        self.temp = out.decode()
        return out

    def barrier(self):
        return self.comm.barrier()

    def all_gather(self, data):
        self.gathers += 1
        if self.gathers == self.gather_no and not self.after:
            self._die()
        out = self.comm.all_gather(data)
        if self.gathers == self.gather_no and self.after:
            self._die()
        return out

    def _die(self):
        written = sorted(os.listdir(self.temp))
        mine = f"shard-{self.rank() + 1:05d}-"
        # The kill is meant to land after this rank wrote its files into the temp folder.
        assert any(f.startswith(mine) for f in written), written
        print(f"KILL rank {self.rank()} at all_gather {self.gathers}"
              f"{' (returned)' if self.after else ''}; temp folder holds {written}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


def _kill_inside_save(rank: int, async_save: bool) -> None:
    """sync: rank 1 dies as it enters the agreement on the written files (rank 0 waits in it).
    async: rank 0, the coordinator, dies with every rank's report in hand, right before it would
    write the index and commit. Patched here, in the test process only."""
    from ckptio import _core

    kill_rank, gather_no, after = (0, 3, True) if async_save else (1, 2, False)
    if rank != kill_rank:
        return
    real = _core.dist_save
    target = f"global_step{CRASH_STEP}"

    def dist_save(comm, path, *args):
        if os.path.basename(path).endswith(target):
            comm = _KillAt(comm, gather_no, after)
        return real(comm, path, *args)

    _core.dist_save = dist_save


def make_io(exp_dir: str, async_save: bool):
    import ckptio.dist as cd

    return cd.CheckpointIO(exp_dir, keep_n_latest=3, async_save=async_save, sync=False)


def save(io, run: Run, exp_dir: str) -> None:
    io.save(**run.objects(), epoch=run.sampler.epoch, step=run.step, global_step=run.step,
            batch_size=BATCH)
    dump(run, exp_dir)  # what this save holds (an async save has copied it by now)


def mode_crash(mesh, rank, world, exp_dir, async_save):
    from ckptio import errors

    _kill_inside_save(rank, async_save)
    run = Run(mesh, rank, world, seed=0)
    io = make_io(exp_dir, async_save)
    try:
        while run.step < STEPS:
            run.train_step()
            if run.step % SAVE_EVERY == 0:
                save(io, run, exp_dir)
        io.wait()
    except Exception as exc:  # the survivor: its peer is gone
        kind = "ckptio" if isinstance(exc, errors.Error) else "other"
        print(f"SURVIVOR rank {rank}: {kind} {type(exc).__name__}: {exc}", flush=True)
        os._exit(3)  # the group is broken: no teardown
    raise AssertionError("the run finished: the kill point was never reached")


def resume(run: Run, io, sampler=None) -> dict:
    run.init_optimizer_state()
    got = io.load(**run.objects(sampler))
    run.step = got["global_step"]
    return got


def mode_resume(mesh, rank, world, exp_dir, async_save):
    reference = Run(mesh, rank, world, seed=0)
    while reference.step < STEPS:
        reference.train_step()
    want = reference.local_state()

    run = Run(mesh, rank, world, seed=1)  # other weights: only the load can make them equal
    io = make_io(exp_dir, async_save)
    got = resume(run, io)
    assert got["global_step"] == RESUME_STEP and got["path"].endswith(
        f"global_step{RESUME_STEP}"), got
    check_same_state(run.local_state(), read_dump(exp_dir, RESUME_STEP, rank), "after load")
    while run.step < STEPS:
        run.train_step()
        if run.step % SAVE_EVERY == 0:
            save(io, run, exp_dir)  # step 6 again: the crashed save left nothing in the way
    io.wait()
    check_same_state(run.local_state(), want, "resumed vs uninterrupted")
    print(f"rank {rank}: resumed run equals the uninterrupted one", flush=True)


def mode_resume1(mesh, rank, world, exp_dir, async_save):
    assert world == 1
    run = Run(mesh, rank, world, seed=1)
    io = make_io(exp_dir, async_save)
    got = resume(run, io, GlobalPosition(run.sampler))
    assert got["global_step"] == RESUME_STEP, got
    # The full tensors the 2 ranks held when they saved: FSDP shards rows (dim 0) in rank order;
    # the EMA partitions are one flat range each, padding at the end.
    parts = [read_dump(exp_dir, RESUME_STEP, r) for r in (0, 1)]
    mine = run.local_state()
    for k, v in mine.items():
        if k.startswith("ema."):
            full = torch.cat([p[k] for p in parts])[:v.numel()]
            same(v, full.reshape(v.shape), k)
        elif k.startswith(("model.", "optim.")):
            if parts[0][k].dim() == 0:  # AdamW's step: replicated
                same(v, parts[0][k], k)
            else:
                same(v, torch.cat([p[k] for p in parts]), k)
    assert mine["sched"] == parts[0]["sched"] and mine["param_groups"] == parts[0]["param_groups"]
    assert (mine["sampler"]["epoch"], mine["sampler"]["consumed"]) == (
        parts[0]["sampler"]["epoch"], parts[0]["sampler"]["consumed"])
    # It trains on. Its batches (4 samples, not 2 x 4) and its reductions differ from the 2-rank
    # run's, so its numbers are not expected to equal the 2-rank run's: only that it runs.
    for _ in range(2):
        loss = run.train_step()
        assert loss == loss, "loss is NaN"
    assert int(run.opt.state_dict()["state"][0]["step"]) == RESUME_STEP + 2
    print("1 rank: loaded the 2-rank checkpoint and trained on", flush=True)


def main() -> int:
    mode, rank, world, init_file, exp_dir, variant = sys.argv[1:7]
    rank, world = int(rank), int(world)
    # Bounds how long a rank waits for a dead peer (gloo usually notices at once: the socket
    # closes); not a measurement.
    timeout = datetime.timedelta(seconds=float(os.environ.get("CKPTIO_TEST_PG_TIMEOUT_S", "60")))
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world, timeout=timeout)
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (world,))
    try:
        globals()[f"mode_{mode}"](mesh, rank, world, exp_dir, variant == "async")
        dist.barrier()
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
