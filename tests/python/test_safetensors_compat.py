"""ckptio.safetensors against the safetensors package: same bytes, same values, same exceptions."""

import numpy as np
import pytest
import safetensors
import safetensors.numpy as sn
import safetensors.torch as st
import torch

from ckptio import errors
from ckptio import safetensors as cs
from ckptio.safetensors import numpy as cn
from conftest import PACKAGE_UNREADABLE, header_of, random_state, same_bits

SEEDS = range(40)
# None: no __metadata__; {}: an empty one; one key (the package orders several keys at random).
METADATAS = [None, {}, {"format": "pt"}]


@pytest.mark.parametrize("seed", SEEDS)
def test_save_is_byte_identical_to_the_package(seed):
    state = random_state(seed)
    metadata = METADATAS[seed % len(METADATAS)]
    assert cs.save(state, metadata) == st.save(state, metadata)


@pytest.mark.parametrize("seed", SEEDS)
def test_files_are_byte_identical_and_each_reads_the_other(seed, tmp_path):
    state = random_state(seed)
    metadata = METADATAS[seed % len(METADATAS)]
    ours, theirs = tmp_path / "ours.safetensors", tmp_path / "theirs.safetensors"
    cs.save_file(state, ours, metadata=metadata)
    st.save_file(state, theirs, metadata=metadata)
    assert ours.read_bytes() == theirs.read_bytes()

    loaded = cs.load_file(theirs)
    with safetensors.safe_open(theirs, "pt") as g:
        # File order, as the package returns; empty tensors share an offset (the package orders
        # those at random).
        assert _non_empty(loaded, loaded) == _non_empty(g.offset_keys(), loaded)
    assert all(same_bits(loaded[k], state[k]) for k in state)
    if not any(cs.safe_open(ours).get_slice(k).get_dtype() in PACKAGE_UNREADABLE for k in state):
        back = st.load_file(ours)
        assert sorted(back) == sorted(loaded)
        assert all(same_bits(back[k], state[k]) for k in state)

    with cs.safe_open(theirs, framework="pt") as f, safetensors.safe_open(theirs, "pt") as g:
        assert f.keys() == g.keys()
        assert _non_empty(f.offset_keys(), loaded) == _non_empty(g.offset_keys(), loaded)
        assert f.metadata() == g.metadata()
        for k in f.keys():
            assert same_bits(f.get_tensor(k), state[k])
            assert f.get_slice(k).get_shape() == g.get_slice(k).get_shape()
            assert f.get_slice(k).get_dtype() == g.get_slice(k).get_dtype()


def _non_empty(names, tensors):
    return [n for n in names if tensors[n].numel()]


def test_several_metadata_keys_are_sorted_and_otherwise_identical():
    state = random_state(1)
    metadata = {"zz": "1", "a": "b", "format": "pt"}
    ours, theirs = cs.save(state, metadata), st.save(state, metadata)
    # The package writes a Rust HashMap in random order; ckptio sorts the keys.
    assert list(header_of(ours)["__metadata__"]) == sorted(metadata)
    assert header_of(ours) == header_of(theirs)
    assert len(ours) == len(theirs) and ours[-100:] == theirs[-100:]


@pytest.mark.parametrize("seed", range(10))
def test_load_reads_the_packages_bytes(seed):
    state = random_state(seed)
    loaded = cs.load(st.save(state))
    assert sorted(loaded) == sorted(state)
    assert all(same_bits(loaded[k], state[k]) for k in state)
    assert all(same_bits(v, state[k]) for k, v in cs.load(bytearray(cs.save(state))).items())


def test_loaded_tensors_are_writable_and_own_their_memory(tmp_path):
    path = tmp_path / "a.safetensors"
    cs.save_file({"a": torch.zeros(4)}, path)
    with cs.safe_open(path) as f:
        t = f.get_tensor("a")
        s = f.get_slice("a")[1:]
    t += 1
    s += 2
    assert cs.load_file(path)["a"].tolist() == [0, 0, 0, 0]
    assert cs.load(path.read_bytes())["a"].add_(1).tolist() == [1, 1, 1, 1]


SLICES = [
    (slice(None),),
    (slice(1, None),),
    (slice(None, None, 2),),
    (1,),
    (Ellipsis, slice(0, 1)),
    (slice(0, 2), slice(1, 3)),
    (slice(-2, None),),
]


@pytest.mark.parametrize("index", SLICES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int8, torch.float8_e5m2])
def test_get_slice_matches_the_package(index, dtype, tmp_path):
    t = torch.arange(60, dtype=torch.float32).reshape(4, 3, 5).to(dtype)
    path = tmp_path / "s.safetensors"
    st.save_file({"t": t}, path)
    with cs.safe_open(path) as f, safetensors.safe_open(path, "pt") as g:
        ours, theirs = f.get_slice("t")[index], g.get_slice("t")[index]
    assert same_bits(ours, theirs) and ours.is_contiguous()


@pytest.mark.parametrize("seed", range(15))
def test_numpy_flavour_is_byte_identical_and_reads_the_package(seed, tmp_path):
    rng = np.random.default_rng(seed)
    names = sorted(cn_dtypes := ["BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64",
                                 "F16", "F32", "F64", "C64"])
    state = {k: v.numpy() for k, v in random_state(seed, dtypes=names).items()}
    assert set(cn_dtypes) == set(names)
    metadata = METADATAS[seed % len(METADATAS)]
    assert cn.save(state, metadata) == sn.save(state, metadata)
    ours, theirs = tmp_path / "ours.safetensors", tmp_path / "theirs.safetensors"
    cn.save_file(state, ours, metadata=metadata)
    sn.save_file(state, theirs, metadata=metadata)
    assert ours.read_bytes() == theirs.read_bytes()
    for loaded in (cn.load_file(theirs), cn.load(theirs.read_bytes())):
        assert sorted(loaded) == sorted(state)
        assert all(same_bits(loaded[k], state[k]) for k in state)
    back = sn.load_file(ours)
    assert all(same_bits(back[k], state[k]) for k in state)
    del rng
    with cs.safe_open(ours, framework="np") as f:
        assert all(same_bits(f.get_tensor(k), state[k]) for k in state)
        k = sorted(state)[0]
        assert same_bits(f.get_slice(k)[...], state[k])


# --- the same exceptions where the package raises ---------------------------------------------

def _both_raise(exc, call):
    for module in (cs, st):
        with pytest.raises(exc):
            call(module)


def test_not_a_dict_raises_value_error():
    _both_raise(ValueError, lambda m: m.save([torch.zeros(1)]))


def test_not_a_tensor_raises_value_error():
    _both_raise(ValueError, lambda m: m.save({"a": [1.0]}))


def test_non_contiguous_raises_value_error():
    _both_raise(ValueError, lambda m: m.save({"a": torch.zeros(3, 4).t()}))


def test_sparse_raises_value_error():
    _both_raise(ValueError, lambda m: m.save({"a": torch.zeros(3, 4).to_sparse()}))


def test_shared_memory_raises_runtime_error():
    base = torch.zeros(10)
    _both_raise(RuntimeError, lambda m: m.save({"a": base, "b": base}))
    _both_raise(RuntimeError, lambda m: m.save({"a": base, "b": base[:5]}))


def test_views_of_disjoint_parts_of_one_storage_are_saved():
    base = torch.arange(10.0)
    state = {"a": base[:5], "b": base[5:]}
    assert cs.save(state) == st.save(state)


def test_metadata_values_must_be_strings():
    _both_raise(TypeError, lambda m: m.save({"a": torch.zeros(1)}, {"a": 1}))


def test_missing_file_raises_file_not_found(tmp_path):
    _both_raise(FileNotFoundError, lambda m: m.load_file(tmp_path / "missing.safetensors"))


def test_missing_tensor_raises(tmp_path):
    path = tmp_path / "a.safetensors"
    st.save_file({"a": torch.zeros(1)}, path)
    with cs.safe_open(path) as f, pytest.raises(errors.NotFoundError, match='"b"'):
        f.get_tensor("b")
    with safetensors.safe_open(path, "pt") as g, pytest.raises(safetensors.SafetensorError):
        g.get_tensor("b")


def test_truncated_file_raises_corrupt(tmp_path):
    path = tmp_path / "a.safetensors"
    st.save_file({"a": torch.zeros(100)}, path)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(safetensors.SafetensorError):
        st.load_file(path)
    with pytest.raises(errors.CorruptError):
        cs.load_file(path)
    with pytest.raises(errors.CorruptError):
        cs.load(path.read_bytes())


def test_closed_file_raises(tmp_path):
    path = tmp_path / "a.safetensors"
    st.save_file({"a": torch.zeros(1)}, path)
    with cs.safe_open(path) as f:
        pass
    with pytest.raises(errors.Error, match="closed"):
        f.keys()


# --- save_model / load_model -------------------------------------------------------------------

class TiedModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(10, 4)
        self.head = torch.nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight
        self.norm = torch.nn.LayerNorm(4)


def test_save_model_drops_tied_names_like_the_package(tmp_path):
    torch.manual_seed(0)
    model = TiedModel()
    ours, theirs = tmp_path / "ours.safetensors", tmp_path / "theirs.safetensors"
    cs.save_model(model, ours)
    st.save_model(model, theirs)
    assert ours.read_bytes() == theirs.read_bytes()
    with cs.safe_open(ours) as f:
        assert f.metadata() == {"head.weight": "embed.weight"}
        assert "head.weight" not in f.keys()

    fresh = TiedModel()
    assert cs.load_model(fresh, theirs) == st.load_model(TiedModel(), theirs)
    assert torch.equal(fresh.head.weight, model.embed.weight)


def test_load_model_strict_reports_missing_and_unexpected(tmp_path):
    path = tmp_path / "m.safetensors"
    cs.save_file({"embed.weight": torch.zeros(10, 4), "extra": torch.zeros(1)}, path)
    with pytest.raises(RuntimeError) as ours:
        cs.load_model(TiedModel(), path)
    with pytest.raises(RuntimeError) as theirs:
        st.load_model(TiedModel(), path)
    assert str(ours.value) == str(theirs.value)
    assert cs.load_model(TiedModel(), path, strict=False) == st.load_model(
        TiedModel(), path, strict=False)


def test_zero_dim_f4_cannot_be_saved():
    t = torch.tensor(7, dtype=torch.uint8).view(torch.float4_e2m1fn_x2)
    with pytest.raises(safetensors.SafetensorError):
        st.save({"a": t})
    with pytest.raises(errors.InvalidArgumentError, match="tensor 'a'"):
        cs.save({"a": t})


@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_both_backends_read_every_dtype_and_writes_never_reach_the_file(backend, tmp_path):
    state = random_state(7, count=12)
    path = tmp_path / "a.safetensors"
    st.save_file(state, path)
    before = path.read_bytes()
    for loaded in (cs.load_file(path, backend=backend),
                   cs.safe_open(path, backend=backend).get_tensors()):
        assert all(same_bits(loaded[k], state[k]) for k in state)
        for t in loaded.values():
            t.reshape(-1).view(torch.uint8).fill_(7)
    with cs.safe_open(path, backend=backend) as f:
        for k in f.keys():
            f.get_tensor(k).reshape(-1).view(torch.uint8).fill_(9)
    assert path.read_bytes() == before
    numpy_state = {"x": np.arange(5, dtype=np.int16)}
    cn.save_file(numpy_state, path)
    loaded = cn.load_file(path, backend=backend)
    loaded["x"][:] = 3
    assert cn.load_file(path, backend=backend)["x"].tolist() == [0, 1, 2, 3, 4]


def test_misaligned_tensors_are_copied_not_viewed(tmp_path):
    import json
    import struct

    header = json.dumps({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
                         "b": {"dtype": "F32", "shape": [1], "data_offsets": [1, 5]}}).encode()
    header += b" " * (-len(header) % 8)
    path = tmp_path / "odd.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\x07"
                     + struct.pack("<f", 1.5))
    assert cs.load_file(path)["b"].tolist() == [1.5]
    assert cn.load_file(path)["b"].tolist() == [1.5]


def test_unknown_backend_raises(tmp_path):
    with pytest.raises(errors.InvalidArgumentError):
        cs.load_file(tmp_path / "x", backend="uring")


def test_threads_share_one_open_file(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    state = random_state(11, count=16)
    path = tmp_path / "a.safetensors"
    cs.save_file(state, path)
    with cs.safe_open(path, backend="pread") as f:
        with ThreadPoolExecutor(4) as pool:
            loaded = dict(zip(f.keys(), pool.map(f.get_tensor, f.keys())))
    assert all(same_bits(loaded[k], state[k]) for k in state)


def test_big_endian_arrays_are_written_little_endian_like_the_package():
    arrays = {"x": np.arange(6, dtype=">i4").reshape(2, 3), "y": np.array([1.5], dtype=">f8")}
    assert cn.save(arrays) == sn.save(arrays)
    back = cn.load(cn.save(arrays))
    assert back["x"].tolist() == arrays["x"].tolist() and back["y"].tolist() == [1.5]


@pytest.mark.parametrize("seed", range(4))
def test_direct_io_files_are_byte_identical_to_the_package(seed, tmp_path):
    # Megabytes at offsets that are not 4 KiB multiples, so the file has an O_DIRECT middle and
    # ordinary head and tail pieces around it.
    g = torch.Generator().manual_seed(seed)
    state = random_state(seed)
    state["big.f32"] = torch.randn(3 * 1024 * 1024 // 4 + 7 * seed + 1, generator=g)
    state["big.bf16"] = torch.randn(1000 + seed, 1031, generator=g).to(torch.bfloat16)
    state["big.i8"] = torch.randint(-100, 100, (2 * 1024 * 1024 + 3,), generator=g,
                                    dtype=torch.int8)
    metadata = METADATAS[seed % len(METADATAS)]
    ours, theirs = tmp_path / "ours.safetensors", tmp_path / "theirs.safetensors"
    cs.save_file(state, ours, metadata=metadata, direct_io=True, sync=seed % 2 == 0)
    st.save_file(state, theirs, metadata=metadata)
    assert ours.read_bytes() == theirs.read_bytes()
