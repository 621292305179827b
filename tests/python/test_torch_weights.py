"""ckptio.torch.load_checkpoint and save_sharded on local sources."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import ckptio.torch as ct
from ckptio import errors


def net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 2))


def test_every_local_source_kind(tmp_path: Path) -> None:
    src = net(0)
    torch.save(src.state_dict(), tmp_path / "w.pt")
    ct.save_sharded(src.state_dict(), tmp_path / "sharded", max_shard_size=64)
    ct.save_sharded(src.state_dict(), tmp_path / "single")
    io = ct.CheckpointIO(tmp_path / "exp")
    ema = net(5)
    io.save(model=src, ema=ema, epoch=0, step=1, global_step=1)
    ckpt = io.latest()
    for source, want in ((tmp_path / "w.pt", src), (tmp_path / "sharded", src),
                         (tmp_path / "single" / "model.safetensors", src), (ckpt, ema)):
        dst = net(9)
        assert ct.load_checkpoint(dst, source) == ([], [])
        for a, b in zip(dst.state_dict().values(), want.state_dict().values()):
            assert torch.equal(a, b), source
    dst = net(9)
    ct.load_checkpoint(dst, ckpt, weights="model")
    assert torch.equal(dst[0].weight, src[0].weight)
    with pytest.raises(errors.UnsafeError):
        ct.load_checkpoint(net(9), tmp_path / "w.pt", allow_pickle=False)


def test_strict_names_every_problem_before_writing(tmp_path: Path) -> None:
    ct.save_sharded(net(0).state_dict(), tmp_path)
    other = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 3))
    before = other[0].weight.clone()
    with pytest.raises(errors.MismatchError, match="2.weight"):
        ct.load_checkpoint(other, tmp_path)
    assert torch.equal(other[0].weight, before)
    bigger = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 2), nn.Linear(2, 2))
    keys = ct.load_checkpoint(bigger, tmp_path, strict=False)
    assert sorted(keys.missing_keys) == ["3.bias", "3.weight"] and keys.unexpected_keys == []
    assert torch.equal(bigger[0].weight, net(0)[0].weight)


def test_non_contiguous_targets_are_filled(tmp_path: Path) -> None:
    w = torch.arange(6.0).reshape(2, 3)
    ct.save_sharded({"w": w}, tmp_path)
    target = {"w": torch.zeros(3, 2).t()}
    ct.load_checkpoint(target, tmp_path)
    assert torch.equal(target["w"], w)


def test_narrowing_needs_consent_and_overflow_is_refused(tmp_path: Path) -> None:
    w = torch.tensor([1.0, 1.0 + 2.0**-12, 3.0e38])  # rounds in BF16; 3e38 overflows F16
    ct.save_sharded({"w": w[:2], "big": w}, tmp_path)
    bf16 = {"w": torch.zeros(2, dtype=torch.bfloat16), "big": torch.zeros(3, dtype=torch.bfloat16)}
    with pytest.raises(errors.MismatchError, match="would round"):
        ct.load_checkpoint(bf16, tmp_path)
    ct.load_checkpoint(bf16, tmp_path, allow_narrowing=True)
    assert torch.equal(bf16["w"], w[:2].to(torch.bfloat16))
    f16 = {"w": torch.zeros(2, dtype=torch.float16), "big": torch.zeros(3, dtype=torch.float16)}
    with pytest.raises(errors.MismatchError, match="big"):
        ct.load_checkpoint(f16, tmp_path, allow_narrowing=True)
    widened = {"w": torch.zeros(2, dtype=torch.float64), "big": torch.zeros(3, dtype=torch.float64)}
    ct.load_checkpoint(widened, tmp_path)
    assert torch.equal(widened["big"], w.double())
