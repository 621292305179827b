"""ckptio.opensora on 2 gloo ranks: Open-Sora's CheckpointIO.save/load (async and not), keep-N
with rm_checkpoints, the EMA written by every rank as model_sharding partitions and loaded back
whole, as partitions, and for inference with load_checkpoint(..., cai_model_name="ema")."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("torch.distributed")
sys.path.insert(0, str(Path(__file__).parent))
from _dist_launch import run_ranks  # noqa: E402


def test_opensora_checkpoint_io(tmp_path):
    run_ranks("opensora", 2, tmp_path / "outputs", tmp_path / "rdv")
