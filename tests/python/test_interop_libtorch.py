"""A checkpoint written by the libtorch train-demo resumes in Python, and one Python writes resumes
in libtorch: the same folders, keyed the same way, on both sides."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

import ckptio.torch as ct
from _tools import run, tool

SIZE = dict(channels=4, tokens=8, dim=32, depth=2, heads=2)
FLAGS = ["--steps", "6", "--ckpt-every", "3", "--threads", "1", "--no-fsync", "--batch-size", "8",
         "--dataset-size", "64"] + [x for k, v in SIZE.items() for x in (f"--{k}", str(v))]


class Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))


class Denoiser(nn.Module):
    """examples/denoiser.h in Python: same names, same parameter order."""

    def __init__(self, channels: int, tokens: int, dim: int, depth: int, heads: int) -> None:
        super().__init__()
        self.x_embedder = nn.Linear(channels, dim)
        self.t_embedder = nn.Sequential(nn.Linear(64, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.final_norm = nn.LayerNorm(dim)
        self.final_layer = nn.Linear(dim, channels)
        self.pos_embed = nn.Parameter(torch.zeros(tokens, dim))


class JsonState:
    """A scheduler/sampler stand-in: keeps whatever state it is given."""

    def __init__(self) -> None:
        self.state = None

    def state_dict(self):
        return self.state

    def load_state_dict(self, state) -> None:
        self.state = state


def checkpoint_at(exp: Path, global_step: int) -> Path:
    (path,) = [Path(e["path"]) for e in ct.CheckpointIO(exp).list() if e["global_step"] == global_step]
    return path


def test_train_demo_checkpoint_resumes_in_python_and_back(tmp_path: Path) -> None:
    demo = tool("train-demo")
    cli = tool("ckptio")
    a, b = tmp_path / "cpp", tmp_path / "py"
    run(demo, "--out", a, *FLAGS)
    cpp3 = checkpoint_at(a, 3)

    model, ema = Denoiser(**SIZE), Denoiser(**SIZE)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1.0, weight_decay=0.5)
    scheduler, sampler = JsonState(), JsonState()
    running = ct.CheckpointIO(a).load(cpp3, model=model, ema=ema, optimizer=optimizer,
                                      lr_scheduler=scheduler, sampler=sampler)
    assert running["global_step"] == 3 and running["extra"]["model"]["dim"] == SIZE["dim"]

    # Python holds exactly the bytes libtorch wrote, each optimizer state on its own parameter.
    files = load_file(cpp3 / "model" / "model.safetensors")
    assert set(files) == set(model.state_dict())
    for name, t in model.state_dict().items():
        assert torch.equal(t, files[name]), name
    opt_files = load_file(cpp3 / "optimizer" / "optimizer.safetensors")
    for i, p in enumerate(model.parameters()):
        state = optimizer.state[p]
        assert state["exp_avg"].shape == p.shape
        assert torch.equal(state["exp_avg"], opt_files[f"state.{i}.exp_avg"])
        assert torch.equal(state["exp_avg_sq"], opt_files[f"state.{i}.exp_avg_sq"])
        assert state["step"].item() == 3
    group = optimizer.param_groups[0]
    assert group["weight_decay"] == 0.01 and group["lr"] != 1.0  # the checkpoint's, not ours
    assert scheduler.state["type"] == "WarmupCosineLR"
    assert sampler.state is not None

    # Python writes the same state; libtorch verifies it, resumes from it, and its next checkpoint
    # equals the one of the uninterrupted libtorch run bit for bit.
    extra = running["extra"]
    py3 = ct.CheckpointIO(b).save(
        model=model, ema=ema, optimizer=optimizer, lr_scheduler=scheduler, sampler=sampler,
        epoch=running["epoch"], step=running["step"], global_step=3,
        batch_size=running["batch_size"], actual_update_step=running["actual_update_step"],
        extra=extra)
    run(cli, "verify", "--full", py3)
    meta = json.loads((Path(py3) / "optimizer" / "optimizer.json").read_text())
    assert "state.0.step" not in load_file(Path(py3) / "optimizer" / "optimizer.safetensors")
    assert meta["meta"]["type"] == "AdamW" and meta["meta"]["state"]["0"]["step"] == 3
    resumed = run(demo, "--out", b, "--resume", "auto", *FLAGS)
    assert "resumed" in resumed.stdout
    run(demo, "--compare", checkpoint_at(a, 6), checkpoint_at(b, 6))
