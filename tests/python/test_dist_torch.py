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


def test_async_save_failing_rank_raises_through_every_future(tmp_path):
    run_ranks("async_save_fails", 2, tmp_path / "ckpt", tmp_path / "rdv")


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


def test_checkpoint_io_async_reuses_its_staging_memory(tmp_path):
    run_ranks("checkpoint_io_staging", 2, tmp_path / "runs", tmp_path / "rdv")


def test_staging_copy_holds_every_sources_bytes_and_checks_its_destination():
    """The staging copy takes tensors, arrays and addresses (a cached leaf's memory) alike, large
    ones split into pieces over threads; a destination range past the buffer is an error, not a
    write past it."""
    import numpy as np
    import torch

    from ckptio import _core, errors
    from ckptio.dist import _Memory, _StagingBuffer

    gen = torch.Generator().manual_seed(7)
    big = torch.randint(0, 256, (20 << 20,), dtype=torch.uint8, generator=gen)  # 3 pieces
    owner = torch.randn(1000, generator=gen)
    sources = [big, np.arange(300, dtype=np.uint8),
               _Memory(owner.data_ptr(), owner.numel() * 4, owner),
               torch.empty(0, dtype=torch.uint8)]
    wanted = [big.numpy().tobytes(), bytes(range(256)) + bytes(range(44)),
              owner.numpy().tobytes(), b""]
    staging = _StagingBuffer()
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            copies = staging.copy(sources)
            assert [c.tobytes() for c in copies] == wanted
            assert all(c.ctypes.data % 64 == 0 for c in copies if c.size)
    finally:
        torch.set_num_threads(before)
    dst = np.zeros(100, dtype=np.uint8)
    with pytest.raises(errors.InvalidArgumentError, match="does not fit"):
        _core.copy_addresses_into([owner.data_ptr()], [64], dst, [40], 1)
    with pytest.raises(errors.InvalidArgumentError, match="differ in count"):
        _core.copy_addresses_into([owner.data_ptr()], [4, 4], dst, [0], 1)


def test_checkpoint_io_reuses_unchanged_items_and_redoes_changed_ones(tmp_path):
    run_ranks("checkpoint_io_item_cache", 2, tmp_path / "runs", tmp_path / "rdv")


def test_checkpoint_io_reduces_partial_dtensors_on_every_rank_at_every_save(tmp_path):
    run_ranks("checkpoint_io_partial", 4, tmp_path / "runs", tmp_path / "rdv",
              extra_env={"CKPTIO_TEST_PG_TIMEOUT_S": "20"})


class _Mesh:
    """The two methods of a DeviceMesh that the box arithmetic reads."""

    def __init__(self, shape, coord):
        self.shape, self.coord = shape, coord

    def get_coordinate(self):
        return list(self.coord)

    def size(self, dim):
        return self.shape[dim]


@pytest.mark.parametrize("mesh_shape", [(1,), (2,), (3,), (4,), (2, 2), (2, 3)])
def test_shard_box_is_torchs_box(mesh_shape):
    """The DTensor box computed by arithmetic equals torch's compute_local_shape_and_global_offset
    for Shard/Replicate placements, even and uneven, nested on one dimension."""
    import itertools

    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor._utils import _compute_local_shape_and_global_offset

    from ckptio.dist import _shard_box

    choices = [Replicate(), Shard(0), Shard(1)]
    checked = 0
    for global_shape in [(8, 6), (7, 5), (13, 3), (2, 9)]:
        for placements in itertools.product(choices, repeat=len(mesh_shape)):
            for coord in itertools.product(*(range(n) for n in mesh_shape)):
                mine = _shard_box(global_shape, _Mesh(mesh_shape, coord), list(placements))
                want = _compute_local_shape_and_global_offset(
                    global_shape, mesh_shape, list(coord), list(placements))
                if mine is None:  # left to torch: only empty shards
                    assert 0 in want[0], (global_shape, placements, coord)
                    continue
                assert (tuple(mine[0]), tuple(mine[1])) == (tuple(want[0]), tuple(want[1])), (
                    global_shape, placements, coord)
                checked += 1
    assert checked > 0


def test_communicator_moves_any_size(tmp_path):
    run_ranks("comm_sizes", 3, tmp_path / "unused", tmp_path / "rdv")


def test_a_failing_python_communicator_is_reported_by_its_message(tmp_path):
    """The collective's Python exception reaches the caller as its message, not its traceback."""
    from ckptio import _core, errors

    class Broken:
        def rank(self):
            return 0

        def size(self):
            return 1

        timeout_ms = 1000

        def all_gather(self, data):
            raise RuntimeError("the network is down")

        def gather(self, data, root):
            raise RuntimeError("the network is down")

        def broadcast(self, data, root):
            raise RuntimeError("the network is down")

        def barrier(self):
            raise RuntimeError("the network is down")

    with pytest.raises(errors.Error) as info:
        _core.dist_save(Broken(), str(tmp_path / "ckpt"), [], False, False, 0, 0)
    message = str(info.value)
    assert "the network is down" in message
    assert "Traceback" not in message and message.count("the network is down") == 1
