"""PyTorch Distributed Checkpoint folders read by ckptio: checkpoints written at test time by
torch.distributed.checkpoint.save from gloo process groups, then `ckptio inspect`/`verify` and
ckptio.torch.load_checkpoint compared with what PyTorch saved (and with DCP's own reader); hostile
`.metadata` files must fail with a typed error and run nothing."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import sys
from pathlib import Path

import pytest
import torch

from _tools import REPO, run, tool

sys.path.insert(0, str(Path(__file__).parent))
import _dcp_fixture  # noqa: E402
import _dist_launch  # noqa: E402

pytest.importorskip("torch.distributed.checkpoint")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_SAVED: dict = {}


def _saved(world: int, tmp_path_factory) -> Path:
    """A checkpoint saved by `world` gloo processes, made once per test session."""
    if world not in _SAVED:
        base = tmp_path_factory.mktemp(f"dcp{world}")
        out, port = base / "ckpt", _free_port()
        # Rank processes from the session's fork server (torch imported once).
        _dist_launch.run_script_on_ranks(REPO / "tests/python/_dcp_fixture.py",
                                         lambda r: [out, world, port, r], world, base / "logs",
                                         dict(os.environ, OMP_NUM_THREADS="1"), "dcp.save")
        _SAVED[world] = out
    return _SAVED[world]


@pytest.fixture(scope="module", params=[2, 4], ids=["2ranks", "4ranks"])
def dcp_dir(request, tmp_path_factory) -> Path:
    return _saved(request.param, tmp_path_factory)


def _bits(t: torch.Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _inspect(path: Path) -> dict:
    return json.loads(run(tool("ckptio"), "inspect", path, "--json").stdout)


def test_inspect_lists_global_shapes_chunks_and_values(dcp_dir):
    doc = _inspect(dcp_dir)
    assert doc["format"] == "dcp"
    tensors = {t["name"]: t for t in doc["tensors"]}
    expected = _dcp_fixture.expected()
    assert set(tensors) == set(expected)
    names = {torch.float32: "F32", torch.bfloat16: "BF16", torch.int32: "I32", torch.int64: "I64",
             torch.float64: "F64"}
    saved = pickle.loads((dcp_dir / ".metadata").read_bytes())
    for name, t in expected.items():
        assert tensors[name]["dtype"] == names[t.dtype]
        assert tensors[name]["shape"] == list(t.shape)
        meta = saved.state_dict_metadata[name]
        assert [(c["offsets"], c["sizes"]) for c in tensors[name]["chunks"]] == \
            [(list(c.offsets), list(c.sizes)) for c in meta.chunks]
        for c in tensors[name]["chunks"]:
            assert (dcp_dir / c["file"]).is_file()
    # The blocks: 16 boxes of 2x3, whatever the number of ranks.
    assert len(tensors["model.blocks"]["chunks"]) == 16
    values = {v["name"]: v["value"] for v in doc["values"]}
    assert values == _dcp_fixture.EXPECTED_VALUES


def test_verify_reads_every_item(dcp_dir):
    out = run(tool("ckptio"), "verify", dcp_dir).stdout
    assert "ok, PyTorch DCP checkpoint, 5 tensors" in out


def test_load_checkpoint_assembles_full_tensors(dcp_dir):
    from ckptio.torch import load_checkpoint

    loaded = load_checkpoint(None, dcp_dir)
    expected = _dcp_fixture.expected()
    assert set(loaded) == set(expected)
    for name, t in expected.items():
        assert loaded[name].dtype == t.dtype and loaded[name].shape == t.shape, name
        assert _bits(loaded[name]) == _bits(t), name


def test_load_checkpoint_equals_dcp_own_reader(dcp_dir, tmp_path):
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    from ckptio.torch import load_checkpoint

    dcp_to_torch_save(dcp_dir, tmp_path / "full.pt")
    theirs = torch.load(tmp_path / "full.pt", weights_only=True)
    ours = load_checkpoint(None, dcp_dir)
    for name, t in ours.items():
        module, key = name.split(".", 1)
        assert _bits(theirs[module][key]) == _bits(t), name


def test_convert_to_safetensors(dcp_dir, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "model.safetensors"
    run(tool("ckptio"), "convert", dcp_dir, out)
    got = load_file(out)
    for name, t in _dcp_fixture.expected().items():
        assert _bits(got[name]) == _bits(t), name


# --- hostile and damaged metadata ---------------------------------------------------------------

def _damaged(dcp_dir: Path, tmp_path: Path, mutate) -> Path:
    out = tmp_path / "damaged"
    shutil.copytree(dcp_dir, out)
    meta = pickle.loads((out / ".metadata").read_bytes())
    mutate(meta)
    (out / ".metadata").write_bytes(pickle.dumps(meta))
    return out


def _fails(path: Path, code: str, *words: str, command: str = "verify") -> str:
    r = run(tool("ckptio"), command, path, check=False)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert f"error: {code}:" in r.stderr, r.stderr
    for w in words:
        assert w in r.stderr, r.stderr
    return r.stderr


def _chunks(meta, name):
    return meta.state_dict_metadata[name].chunks


def _storage(meta, name, offsets):
    for k, v in meta.storage_data.items():
        if k.fqn == name and tuple(k.offset) == tuple(offsets):
            return k, v
    raise KeyError(name)


@pytest.fixture(scope="module")
def small_dcp(tmp_path_factory) -> Path:
    return _saved(2, tmp_path_factory)


def test_box_outside_the_global_shape_is_corrupt(small_dcp, tmp_path):
    from torch.distributed.checkpoint.metadata import ChunkStorageMetadata

    def mutate(meta):
        c = _chunks(meta, "model.rows")
        c[1] = ChunkStorageMetadata(offsets=c[1].offsets, sizes=torch.Size([4, 3]))  # rows 4..8 of 7
    _fails(_damaged(small_dcp, tmp_path, mutate), "corrupt", "model.rows", "outside the global shape")


def test_overlapping_chunks_are_corrupt(small_dcp, tmp_path):
    from torch.distributed.checkpoint.metadata import ChunkStorageMetadata

    def mutate(meta):
        c = _chunks(meta, "model.rows")
        c[0] = ChunkStorageMetadata(offsets=c[0].offsets, sizes=torch.Size([5, 3]))
    _fails(_damaged(small_dcp, tmp_path, mutate), "corrupt", "model.rows", "overlaps")


def test_chunks_that_leave_a_hole_are_corrupt(small_dcp, tmp_path):
    def mutate(meta):
        c = _chunks(meta, "model.rows")
        key, _ = _storage(meta, "model.rows", c[1].offsets)
        del c[1]
        del meta.storage_data[key]
    _fails(_damaged(small_dcp, tmp_path, mutate), "corrupt", "model.rows", "cover 12 of its 21")


def test_chunk_past_the_file_end_is_corrupt(small_dcp, tmp_path):
    from torch.distributed.checkpoint.filesystem import _StorageInfo

    def mutate(meta):
        key, info = _storage(meta, "model.rows", (0, 0))
        meta.storage_data[key] = _StorageInfo(info.relative_path, info.offset, info.length + 10**6)
    _fails(_damaged(small_dcp, tmp_path, mutate), "corrupt", "past the file's end")


def test_oversized_chunk_is_corrupt(small_dcp, tmp_path):
    from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, MetadataIndex

    def mutate(meta):
        # A 1e6-row chunk claimed for the first item: more bytes than the item holds.
        t = meta.state_dict_metadata["model.rows"]
        t.size = torch.Size([10**6 + 3, 3])
        c = t.chunks
        c[0] = ChunkStorageMetadata(offsets=c[0].offsets, sizes=torch.Size([10**6, 3]))
        key, info = _storage(meta, "model.rows", c[1].offsets)
        del meta.storage_data[key]
        c[1] = ChunkStorageMetadata(offsets=torch.Size([10**6, 0]), sizes=torch.Size([3, 3]))
        meta.storage_data[MetadataIndex("model.rows", torch.Size([10**6, 0]), 1)] = info
    _fails(_damaged(small_dcp, tmp_path, mutate), "corrupt", "cannot fit")


def test_item_that_holds_another_shape_is_corrupt(small_dcp, tmp_path):
    def mutate(meta):
        # Point the first row chunk at the column chunk's item (4x3 BF16, not 4x3 F32).
        _, cols = _storage(meta, "model.cols", (0, 0))
        key, _ = _storage(meta, "model.rows", (0, 0))
        meta.storage_data[key] = cols
    _fails(_damaged(small_dcp, tmp_path, mutate), "corrupt", "model.rows", "the metadata says")


def test_relative_path_outside_the_folder_is_corrupt(small_dcp, tmp_path):
    from torch.distributed.checkpoint.filesystem import _StorageInfo

    def mutate(meta):
        key, info = _storage(meta, "model.rows", (0, 0))
        meta.storage_data[key] = _StorageInfo("../" + info.relative_path, info.offset, info.length)
    _fails(_damaged(small_dcp, tmp_path, mutate), "corrupt", "not a file name inside")


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


def test_global_outside_the_dcp_allow_list_is_unsafe_and_runs_nothing(small_dcp, tmp_path):
    marker = tmp_path / "ran"

    def mutate(meta):
        meta.version = _RunsCode(marker)
    for command in ("inspect", "verify"):
        _fails(_damaged(small_dcp, tmp_path / command, mutate), "unsafe", "posix.system", command=command)
    assert not marker.exists()


def test_tensor_rebuild_in_metadata_is_unsafe(small_dcp, tmp_path):
    # A .metadata may not carry tensors: the DCP list has no _rebuild_tensor or storage class.
    def mutate(meta):
        meta.planner_data = {"x": torch.zeros(2)}
    _fails(_damaged(small_dcp, tmp_path, mutate), "unsafe", "torch._utils._rebuild_tensor_v2")


def test_pt_file_refuses_dcp_classes(small_dcp, tmp_path):
    # The .pt allow-list stays closed: DCP's metadata classes are not data for torch.save files.
    meta = pickle.loads((small_dcp / ".metadata").read_bytes())
    torch.save({"meta": meta}, tmp_path / "m.pt")
    _fails(tmp_path / "m.pt", "unsafe", "torch.distributed.checkpoint.metadata.Metadata", command="inspect")


def test_truncated_metadata_is_corrupt(small_dcp, tmp_path):
    out = tmp_path / "cut"
    shutil.copytree(small_dcp, out)
    data = (out / ".metadata").read_bytes()
    for n in (1, len(data) // 2, len(data) - 1):
        (out / ".metadata").write_bytes(data[:n])
        _fails(out, "corrupt")
