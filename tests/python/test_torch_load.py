"""ckptio.torch.torch_load agrees with torch.load(weights_only=True) on files torch writes, and runs
no code from a file."""

from __future__ import annotations

import collections
import pickle
from pathlib import Path

import pytest
import torch

import ckptio.torch as ct
from ckptio import errors


def assert_same(a, b, where: str = "root") -> None:
    if isinstance(b, torch.Tensor):
        assert isinstance(a, torch.Tensor), where
        assert type(a) is type(b), where  # Parameter stays Parameter
        assert a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride(), where
        assert a.storage_offset() == b.storage_offset(), where
        assert a.requires_grad == b.requires_grad, where
        assert torch.equal(a.detach().view(torch.uint8) if a.dtype == torch.bool else a.detach(),
                           b.detach().view(torch.uint8) if b.dtype == torch.bool else b.detach()), where
    elif isinstance(b, dict):
        assert isinstance(a, dict) and list(a) == list(b), where
        for k in b:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(b, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def fixtures():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 8, generator=g)
    dtypes = {
        str(dt): (torch.randn(3, 5, generator=g) * 10).to(dt)
        for dt in (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64,
                   torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool,
                   torch.float8_e4m3fn, torch.float8_e5m2)
    }
    yield "dtypes", dtypes
    yield "views", {"base": base, "row": base[2], "col": base[:, 3], "t": base.t(),
                    "slice": base[1:4, 2:6], "expand": torch.ones(3).expand(4, 3),
                    "scalar": torch.tensor(3.5), "empty": torch.empty(0, 4)}
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()
    yield "training", {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3,
                       "name": "run", "ratio": 0.5, "flags": (True, None), "bytes": b"\x00\x01",
                       "nested": {"a": [1, 2, {"b": torch.arange(4)}]},
                       "ordered": collections.OrderedDict(z=torch.zeros(2), a=torch.ones(2))}
    yield "parameters", {"w": torch.nn.Parameter(torch.randn(2, 2, generator=g)),
                         "frozen": torch.nn.Parameter(torch.randn(2, generator=g), requires_grad=False),
                         "grad": torch.randn(2, generator=g).requires_grad_()}


@pytest.mark.parametrize("zipfile", [True, False], ids=["zip", "legacy"])
@pytest.mark.parametrize("name,obj", list(fixtures()), ids=[n for n, _ in fixtures()])
def test_agrees_with_torch_load(tmp_path: Path, name: str, obj, zipfile: bool) -> None:
    path = tmp_path / f"{name}.pt"
    if not zipfile and name == "dtypes":
        # Legacy files hold float8 as untyped storages, which ckptio's legacy reader refuses.
        obj = {k: v for k, v in obj.items() if "float8" not in k}
    torch.save(obj, path, _use_new_zipfile_serialization=zipfile)
    ours = ct.torch_load(path)
    theirs = torch.load(path, weights_only=True)
    assert_same(ours, theirs)


def test_shared_storage_is_shared_again(tmp_path: Path) -> None:
    base = torch.arange(12.0)
    torch.save({"a": base, "b": base[4:].view(2, 4)}, tmp_path / "s.pt")
    loaded = ct.torch_load(tmp_path / "s.pt")
    loaded["a"][5] = -1
    assert loaded["b"][0, 1] == -1


def test_key_picks_a_sub_object(tmp_path: Path) -> None:
    torch.save({"state_dict": {"layer.weight": torch.ones(2)}, "epoch": 1}, tmp_path / "k.pt")
    assert torch.equal(ct.torch_load(tmp_path / "k.pt", key="state_dict.layer.weight"), torch.ones(2))
    with pytest.raises(errors.NotFoundError):
        ct.torch_load(tmp_path / "k.pt", key="nope")


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_code_in_the_file_never_runs(tmp_path: Path, capfd) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(errors.UnsafeError, match="print"):
        ct.torch_load(path)
    assert "pwned" not in capfd.readouterr().out
    (tmp_path / "raw.pkl").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(errors.Error):
        ct.torch_load(tmp_path / "raw.pkl")


def test_legacy_untyped_storage_is_refused_cleanly(tmp_path: Path) -> None:
    torch.save({"x": torch.ones(3, dtype=torch.float8_e4m3fn)}, tmp_path / "f8.pt",
               _use_new_zipfile_serialization=False)
    with pytest.raises(errors.Error, match="untyped storage"):
        ct.torch_load(tmp_path / "f8.pt")
