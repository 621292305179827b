#!/usr/bin/env python3
"""Train a small PyTorch model with AdamW, an EMA and a resumable sampler, checkpointing with
ckptio.torch.CheckpointIO; get SIGKILLed in the middle of a save; resume; end bit-identical to an
uninterrupted run.

  python train.py                      the whole story in a work folder (what `make demo` runs)
  python train.py --out DIR [--steps N --ckpt-every K --resume --kill-at-step K --seed S]

Run with PYTHONPATH=build/release/python from the repository root (or after `pip install .`).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import ckptio.torch as ct

DATASET, BATCH, DIM = 512, 32, 16


class ResumableSampler:
    """A new permutation of the dataset every epoch, seeded by (seed, epoch); resumes mid-epoch."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch, self.position = size, seed, 0, 0

    def _order(self) -> torch.Tensor:
        return torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 7919 + self.epoch))

    def next_batch(self, n: int) -> torch.Tensor:
        if self.position + n > self.size:
            self.epoch, self.position = self.epoch + 1, 0
        batch = self._order()[self.position:self.position + n]
        self.position += n
        return batch

    def state_dict(self) -> dict:
        return {"size": self.size, "seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.size, self.seed, self.epoch, self.position = (
            state["size"], state["seed"], state["epoch"], state["position"])


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(DIM, 128), nn.GELU(), nn.LayerNorm(128), nn.Linear(128, 128),
                         nn.GELU(), nn.Linear(128, DIM))


def train(args: argparse.Namespace) -> int:
    torch.set_num_threads(1)  # the same float reductions in every run
    torch.manual_seed(args.seed)
    data_gen = torch.Generator().manual_seed(args.seed)
    x_all = torch.randn(DATASET, DIM, generator=data_gen)
    y_all = torch.sin(x_all @ torch.randn(DIM, DIM, generator=data_gen))
    model = make_model()
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    warmup = max(1, args.steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps))))
    sampler = ResumableSampler(DATASET, args.seed)

    armed = False

    # SIGKILL in the middle of the armed save: after its files, before its manifest commits it.
    def on_phase(phase: str) -> None:
        if armed and phase == "write_manifest":
            os.kill(os.getpid(), signal.SIGKILL)

    io = ct.CheckpointIO(args.out, keep_n_latest=3, async_save=True, snapshot="copy", on_phase=on_phase)
    start = 0
    if args.resume and io.latest() is not None:
        running = io.load("latest", model=model, ema=ema, optimizer=optimizer, lr_scheduler=scheduler,
                          sampler=sampler)
        start = running["global_step"]
        print(f"  resumed from {Path(running['path']).name} (epoch {running['epoch']}, step {start})")

    blocked = []
    for step in range(start, args.steps):
        idx = sampler.next_batch(BATCH)
        noise = torch.randn(BATCH, DIM, generator=torch.Generator().manual_seed(args.seed * 100003 + step))
        loss = nn.functional.mse_loss(model(x_all[idx] + 0.05 * noise), y_all[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()  # at once, even while the previous save is still being written
        scheduler.step()
        with torch.no_grad():
            for k, v in model.state_dict().items():
                ema[k].lerp_(v, 0.01)
        if (step + 1) % args.ckpt_every == 0 or step + 1 == args.steps:
            if step + 1 == args.kill_at_step:
                io.wait()  # let the previous save commit, so the kill tears this one
                armed = True  # and stays armed: this save is still being written during later steps
            t0 = time.perf_counter()
            io.save(model=model, ema=ema, optimizer=optimizer, lr_scheduler=scheduler, sampler=sampler,
                    epoch=sampler.epoch, step=sampler.position // BATCH, global_step=step + 1,
                    batch_size=BATCH, actual_update_step=step + 1, extra={"seed": args.seed})
            blocked.append((time.perf_counter() - t0) * 1000)
            print(f"  step {step + 1:4d}  loss {loss.item():.5f}  checkpoint (save() blocked {blocked[-1]:.1f} ms)")
    io.wait()
    print(f"  final checkpoint: {io.latest()}")
    return 0


def same_checkpoint(a: Path, b: Path) -> list:
    """Files of two checkpoint folders that differ (the manifest aside, which lists the others)."""
    names = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    other = sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    if names != other:
        return [f"file lists differ: {names} vs {other}"]
    return [n for n in names if n != "ckptio.manifest.json" and (a / n).read_bytes() != (b / n).read_bytes()]


def story(args: argparse.Namespace) -> int:
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ckptio-python-demo-"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    me = [sys.executable, os.path.abspath(__file__), "--steps", str(args.steps), "--ckpt-every",
          str(args.ckpt_every), "--seed", str(args.seed)]
    kill_at = args.steps * 3 // 4 // args.ckpt_every * args.ckpt_every or args.ckpt_every
    started = time.time()

    print(f"\n1/3  Python: train, checkpointing every {args.ckpt_every} steps (async copy); SIGKILLed during the save of step {kill_at}")
    rc = subprocess.call(me + ["--out", str(work / "run"), "--kill-at-step", str(kill_at)])
    if rc != -signal.SIGKILL:
        print(f"demo: expected the run to die by SIGKILL, got exit status {rc}", file=sys.stderr)
        return 1
    print("  killed by SIGKILL. On disk:", ", ".join(sorted(p.name for p in (work / "run").iterdir())))

    print("\n2/3  Python: restart with resume: the torn save is ignored, training continues")
    subprocess.check_call(me + ["--out", str(work / "run"), "--resume"])

    print("\n3/3  Python: an uninterrupted run of the same seed")
    subprocess.check_call(me + ["--out", str(work / "reference")])
    run_ckpt = ct.CheckpointIO(work / "run").latest()
    ref_ckpt = ct.CheckpointIO(work / "reference").latest()
    differ = same_checkpoint(Path(run_ckpt), Path(ref_ckpt))
    if differ:
        print(f"demo: the resumed run differs from the reference in {differ}", file=sys.stderr)
        return 1
    print(f"  {Path(run_ckpt).name}: model, EMA, optimizer, LR scheduler and sampler are bit-identical "
          "to the uninterrupted run")
    print(f"  the Python story took {time.time() - started:.0f} s; files in {work}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="experiment folder: train into it (without it: the whole story)")
    p.add_argument("--workdir", help="the story's work folder (default: a new temp folder)")
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--ckpt-every", type=int, default=20)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--resume", action="store_true", help="continue from the latest committed checkpoint")
    p.add_argument("--kill-at-step", type=int, default=-1, help="SIGKILL this process during that save")
    args = p.parse_args()
    return train(args) if args.out else story(args)


if __name__ == "__main__":
    sys.exit(main())
