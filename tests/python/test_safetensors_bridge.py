"""The tensor bridge: (dtype name, shape, raw bytes) both ways, without copies."""

import numpy as np
import pytest
import torch

from ckptio import _core, _tensors


def test_every_core_dtype_is_known_to_the_bridge():
    names = _core.dtype_names()
    assert len(names) == 22
    torch_names = set(_tensors.torch_dtypes())
    # torch has every safetensors dtype but the two 6-bit ones.
    assert set(names) - torch_names == {"F6_E2M3", "F6_E3M2"}
    assert set(_tensors.NUMPY_DTYPES) <= set(names)


@pytest.mark.parametrize("name", sorted(_tensors.torch_dtypes()))
def test_torch_round_trip_through_raw_is_a_view(name):
    dtype = _tensors.torch_dtype(name)
    t = torch.arange(48, dtype=torch.uint8).view(dtype).reshape(2, 3, -1)
    dname, shape, raw = _tensors.to_raw(t)
    assert dname == name
    assert raw.dtype == torch.uint8 and raw.dim() == 1
    assert raw.data_ptr() == t.data_ptr()
    back = _tensors.from_raw(dname, shape, raw, "pt")
    assert back.dtype == dtype and back.shape == t.shape
    assert back.data_ptr() == t.data_ptr()


def test_f4_shape_counts_four_bit_values():
    t = torch.zeros(2, 3, dtype=torch.uint8).view(torch.float4_e2m1fn_x2)
    name, shape, _ = _tensors.to_raw(t)
    assert (name, shape) == ("F4", (2, 6))
    assert _tensors.framework_shape("F4", shape, "pt") == (2, 3)


@pytest.mark.parametrize("name", sorted(_tensors.NUMPY_DTYPES))
def test_numpy_round_trip_through_raw_is_a_view(name):
    a = np.arange(48, dtype=np.uint8).view(_tensors.numpy_dtype(name)).reshape(2, -1)
    dname, shape, raw = _tensors.to_raw(a)
    assert dname == name and shape == a.shape
    assert raw.ctypes.data == a.ctypes.data
    back = _tensors.from_raw(dname, shape, raw, "np")
    assert back.dtype == a.dtype and np.array_equal(back.view(np.uint8), a.view(np.uint8))


def test_raw_from_a_mapped_file_is_read_only_and_owns_the_mapping(tmp_path):
    t = torch.arange(10, dtype=torch.float32)
    path = tmp_path / "a.safetensors"
    _core.save_file(str(path), [("t",) + _tensors.to_raw(t)], None, False)
    f = _core.SafeFile(str(path))
    raw = f.tensor("t")
    f.close()
    del f
    assert not raw.flags.writeable
    assert torch.equal(_tensors.from_raw("F32", [10], raw, "pt"), t)


def test_byte_count_must_match_dtype_and_shape():
    from ckptio import errors

    raw = np.zeros(7, dtype=np.uint8)
    with pytest.raises(errors.InvalidArgumentError, match="tensor 'x'"):
        _core.serialize([("x", "F32", [2], raw)], None)
    with pytest.raises(errors.InvalidArgumentError, match="unknown safetensors dtype 'F33'"):
        _core.serialize([("x", "F33", [7], raw)], None)
