"""ckptio.dist on torch.distributed (gloo on CPU, one process per rank): DTensors saved on 4 ranks
load on 4, 2 and 1 bit-exactly; ZeRO flat ranges saved on 4 load on 3 and as whole tensors;
modules, optimizers, schedulers and plain data round-trip; async saves; a failing rank makes
every rank raise. Each scenario checks itself inside every rank (tests/python/_dist_worker.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("torch.distributed")
sys.path.insert(0, str(Path(__file__).parent))
from _dist_launch import run_ranks  # noqa: E402


def test_dtensors_saved_on_4_load_on_4_2_1(tmp_path):
    ckpt = tmp_path / "ckpt"
    run_ranks("dtensor_save", 4, ckpt, tmp_path / "rdv")
    assert (ckpt / "ckptio.distributed.json").is_file()
    for world in (4, 2, 1):
        run_ranks("dtensor_load", world, ckpt, tmp_path / "rdv")


def test_zero_ranges_saved_on_4_load_on_3(tmp_path):
    ckpt = tmp_path / "ckpt"
    run_ranks("zero_save", 4, ckpt, tmp_path / "rdv")
    run_ranks("zero_load", 3, ckpt, tmp_path / "rdv")


def test_objects_and_plain_data_round_trip(tmp_path):
    ckpt = tmp_path / "ckpt"
    run_ranks("objects_save", 2, ckpt, tmp_path / "rdv")
    run_ranks("objects_load", 2, ckpt, tmp_path / "rdv")


def test_async_save(tmp_path):
    run_ranks("async_save", 2, tmp_path / "ckpt", tmp_path / "rdv")


def test_failing_rank_raises_on_every_rank(tmp_path):
    run_ranks("fail_python", 2, tmp_path / "a", tmp_path / "rdv")
    run_ranks("fail_core", 2, tmp_path / "b", tmp_path / "rdv")


def test_checkpoint_io_keep_n_async_and_latest_fallback(tmp_path):
    run_ranks("checkpoint_io", 2, tmp_path / "runs", tmp_path / "rdv")


def test_rank_that_never_arrives_is_a_timeout(tmp_path):
    # The group's own timeout bounds the wait; the value only keeps the test short.
    run_ranks("timeout", 2, tmp_path / "ckpt", tmp_path / "rdv",
              extra_env={"CKPTIO_TEST_PG_TIMEOUT_S": "5"})
    run_ranks("timeout_core", 2, tmp_path / "ckpt2", tmp_path / "rdv",
              extra_env={"CKPTIO_TEST_PG_TIMEOUT_S": "5"})
