"""ckptio.dist and stock PyTorch read each other's distributed checkpoints: a DCP folder written
by torch.distributed.checkpoint.save on 4 ranks loads through ckptio.dist.load on 2; a ckptio
checkpoint saved on 4 ranks loads with dcp.load(..., HuggingFaceStorageReader(path)) on 2 ranks
in processes that never import ckptio."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("torch.distributed.checkpoint")
sys.path.insert(0, str(Path(__file__).parent))
from _dist_launch import run_ranks  # noqa: E402


def test_dcp_saved_on_4_loads_on_2(tmp_path):
    ckpt = tmp_path / "dcp"
    run_ranks("dcp_save", 4, ckpt, tmp_path / "rdv")
    assert (ckpt / ".metadata").is_file()
    run_ranks("dcp_load", 2, ckpt, tmp_path / "rdv")


def test_pytorch_reads_ckptio_checkpoint(tmp_path):
    ckpt = tmp_path / "ckpt"
    run_ranks("dtensor_save", 4, ckpt, tmp_path / "rdv")
    run_ranks("hf_read", 2, ckpt, tmp_path / "rdv")
