"""ckptio.torch.CheckpointIO with live torch objects: save, resume bit-exactly, snapshots, errors."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import ckptio.torch as ct
from ckptio import errors


class Counter:
    """A resumable sampler: any object with state_dict()/load_state_dict()."""

    def __init__(self) -> None:
        self.position, self.epoch = 0, 0

    def state_dict(self) -> dict:
        return {"position": self.position, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.position, self.epoch = state["position"], state["epoch"]


def make(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.GELU(), nn.LayerNorm(16), nn.Linear(16, 3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=50)
    return model, optimizer, scheduler


def train(model, optimizer, scheduler, ema, steps: int, start: int) -> None:
    for step in range(start, start + steps):
        g = torch.Generator().manual_seed(step)
        x, y = torch.randn(8, 6, generator=g), torch.randn(8, 3, generator=g)
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            for k, v in model.state_dict().items():
                ema[k].mul_(0.9).add_(v, alpha=0.1)


@pytest.mark.parametrize("async_save,snapshot", [(False, "copy"), (True, "copy"), (True, "borrow")])
def test_resume_is_bit_exact(tmp_path: Path, async_save: bool, snapshot: str) -> None:
    model, optimizer, scheduler = make()
    ema = {k: v.clone() for k, v in model.state_dict().items()}
    sampler = Counter()
    train(model, optimizer, scheduler, ema, 5, 0)
    sampler.position = 40
    io = ct.CheckpointIO(tmp_path, async_save=async_save, snapshot=snapshot)
    path = io.save(model=model, ema=ema, optimizer=optimizer, lr_scheduler=scheduler, sampler=sampler,
                   epoch=1, step=5, global_step=5, batch_size=8, extra={"note": "x"})
    io.wait()
    assert Path(path).name == "epoch1-global_step5"
    train(model, optimizer, scheduler, ema, 5, 5)

    model2, optimizer2, scheduler2 = make(seed=1)
    ema2 = {k: torch.zeros_like(v) for k, v in model2.state_dict().items()}
    sampler2 = Counter()
    running = ct.CheckpointIO(tmp_path).load(model=model2, ema=ema2, optimizer=optimizer2,
                                             lr_scheduler=scheduler2, sampler=sampler2)
    assert (running["epoch"], running["step"], running["global_step"], running["batch_size"]) == (1, 5, 5, 8)
    assert running["extra"] == {"note": "x"} and running["path"] == path
    assert sampler2.state_dict() == {"position": 40, "epoch": 0}
    train(model2, optimizer2, scheduler2, ema2, 5, 5)
    for (name, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), name
    for k in ema:
        assert torch.equal(ema[k], ema2[k]), k
    assert scheduler.state_dict() == scheduler2.state_dict()
    assert optimizer.state_dict()["param_groups"] == optimizer2.state_dict()["param_groups"]


def test_copy_snapshot_saves_the_values_of_the_moment_save_returned(tmp_path: Path) -> None:
    # Big enough that the background writer is still busy when the tensors change.
    model = nn.Linear(2048, 2048)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 2048)).sum().backward()
    optimizer.step()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    momentum_before = optimizer.state[model.weight]["momentum_buffer"].clone()
    io = ct.CheckpointIO(tmp_path, async_save=True, snapshot="copy")
    path = io.save(model=model, optimizer=optimizer, epoch=0, step=1, global_step=1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        optimizer.state[model.weight]["momentum_buffer"].add_(1.0)
    io.wait()
    saved = load_file(os.path.join(path, "model", "model.safetensors"))
    for k, v in before.items():
        assert torch.equal(saved[k], v), k
    opt = load_file(os.path.join(path, "optimizer", "optimizer.safetensors"))
    assert torch.equal(opt["state.0.momentum_buffer"], momentum_before)


def test_layout_is_the_cpp_one(tmp_path: Path) -> None:
    model, optimizer, scheduler = make()
    train(model, optimizer, scheduler, {k: v.clone() for k, v in model.state_dict().items()}, 2, 0)
    path = Path(ct.CheckpointIO(tmp_path).save(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                                epoch=0, step=2, global_step=2))
    assert sorted(os.listdir(path)) == ["ckptio.manifest.json", "lr_scheduler.json", "model",
                                        "optimizer", "running_states.json"]
    tensors = load_file(path / "optimizer" / "optimizer.safetensors")
    assert set(tensors) == {f"state.{i}.{k}" for i in range(6) for k in ("exp_avg", "exp_avg_sq")}
    meta = json.loads((path / "optimizer" / "optimizer.json").read_text())["meta"]
    assert meta["type"] == "AdamW" and meta["state"]["3"] == {"step": 2}
    assert meta["param_groups"][0]["params"] == list(range(6))
    running = json.loads((path / "running_states.json").read_text())
    assert running["global_step"] == 2


def test_sharded_model_past_max_shard_size(tmp_path: Path) -> None:
    model = nn.Sequential(*[nn.Linear(64, 64) for _ in range(4)])
    io = ct.CheckpointIO(tmp_path, max_shard_size="20KB")
    path = Path(io.save(model=model, epoch=0, step=0, global_step=0))
    assert len(list((path / "model").glob("model-*-of-*.safetensors"))) > 1
    fresh = nn.Sequential(*[nn.Linear(64, 64) for _ in range(4)])
    io.load(model=fresh)
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(a, b)


def test_list_latest_prune_verify(tmp_path: Path) -> None:
    model = nn.Linear(3, 3)
    io = ct.CheckpointIO(tmp_path, keep_n_latest=2)
    for step in (1, 2, 3):
        io.save(model=model, epoch=0, step=step, global_step=step)
    assert [e["global_step"] for e in io.list()] == [2, 3]
    assert io.latest() == str(tmp_path / "epoch0-global_step3")
    assert io.verify(io.latest(), full=True)["ok"]
    assert io.prune(1) == [str(tmp_path / "epoch0-global_step2")]
    with pytest.raises(errors.AlreadyExistsError):
        io.save(model=model, epoch=0, step=3, global_step=3)
    io.save(model=model, epoch=0, step=3, global_step=3, replace=True)
    victim = tmp_path / "epoch0-global_step3" / "model" / "model.safetensors"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    report = io.verify(tmp_path / "epoch0-global_step3", full=True)
    assert not report["ok"] and "model/model.safetensors" in report["problems"][0]


def test_strict_load_reports_every_mismatch(tmp_path: Path) -> None:
    io = ct.CheckpointIO(tmp_path)
    io.save(model=nn.Linear(3, 3), epoch=0, step=0, global_step=0)
    other = nn.Sequential(nn.Linear(3, 3))
    with pytest.raises(RuntimeError, match="0.weight"):
        io.load(model=other)
    result = io.load(model=other, strict=False)["model_keys"]
    assert sorted(result.missing_keys) == ["0.bias", "0.weight"]
    with pytest.raises(errors.NotFoundError):
        io.load(model=nn.Linear(3, 3), optimizer=torch.optim.SGD(nn.Linear(3, 3).parameters(), lr=1))
    with pytest.raises(errors.NotFoundError):
        ct.CheckpointIO(tmp_path / "empty").load(model=nn.Linear(3, 3))


def test_non_finite_scheduler_values_round_trip(tmp_path: Path) -> None:
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
    io = ct.CheckpointIO(tmp_path)
    io.save(optimizer=optimizer, lr_scheduler=scheduler, epoch=0, step=0, global_step=0)
    optimizer2 = torch.optim.SGD(model.parameters(), lr=0.5)
    scheduler2 = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer2, mode="max")
    io.load(optimizer=optimizer2, lr_scheduler=scheduler2)
    assert scheduler2.best == float("inf") and scheduler2.mode == "min"
    assert optimizer2.param_groups[0]["lr"] == 0.1


def test_nothing_is_pickled(tmp_path: Path) -> None:
    model, optimizer, scheduler = make()
    train(model, optimizer, scheduler, copy.deepcopy(model.state_dict()), 1, 0)
    path = Path(ct.CheckpointIO(tmp_path).save(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                                epoch=0, step=1, global_step=1))
    suffixes = {p.suffix for p in path.rglob("*") if p.is_file()}
    assert suffixes <= {".safetensors", ".json"}


def test_optimizer_of_another_type_is_a_mismatch(tmp_path: Path) -> None:
    model, optimizer, scheduler = make()
    train(model, optimizer, scheduler, copy.deepcopy(model.state_dict()), 1, 0)
    io = ct.CheckpointIO(tmp_path)
    io.save(optimizer=optimizer, epoch=0, step=1, global_step=1)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(errors.MismatchError, match="AdamW.*SGD"):
        io.load(optimizer=sgd)
    assert sgd.param_groups[0]["lr"] == 0.1 and not sgd.state
