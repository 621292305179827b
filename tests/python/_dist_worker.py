"""One rank of a multi-process test: `python _dist_worker.py SCENARIO RANK WORLD INIT_FILE DIR`.

Each scenario checks its own results and exits non-zero (with the traceback) on any failure; the
launching test (test_dist_*.py) only checks exit codes. Data is deterministic (seeded), so every
rank can compute the full tensors it expects without talking.
"""

from __future__ import annotations

import os
import sys
import traceback

import torch
import torch.distributed as dist


def full_tensors():
    g = torch.Generator().manual_seed(1234)
    return {
        "w": torch.randn(7, 10, generator=g),  # uneven over 2 and 4 ranks
        "b": torch.randn(5, generator=g).to(torch.bfloat16),
        "r": torch.randn(3, 3, generator=g),
        "ids": torch.arange(11, dtype=torch.int64),
    }


def bits(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().contiguous()
    return t.reshape(-1).view(torch.uint8) if t.numel() else t.reshape(-1)


def same(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    assert a.dtype == b.dtype and tuple(a.shape) == tuple(b.shape), (what, a.dtype, b.dtype,
                                                                     a.shape, b.shape)
    assert torch.equal(bits(a), bits(b)), f"{what}: bytes differ\n{a}\n{b}"


def mesh_for(world: int):
    from torch.distributed.device_mesh import init_device_mesh

    if world == 4:
        return init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))
    return init_device_mesh("cpu", (world,), mesh_dim_names=("dp",))


def dtensor_state(world: int, fill: bool):
    """DTensors over a 2x2 mesh on 4 ranks, a 1-D mesh otherwise; zeros when not `fill`."""
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    mesh = mesh_for(world)
    full = full_tensors()
    if world == 4:
        placements = {"w": [Shard(0), Shard(1)], "b": [Replicate(), Shard(0)],
                      "r": [Replicate(), Replicate()]}
    else:
        placements = {"w": [Shard(1)], "b": [Shard(0)], "r": [Replicate()]}
    model = {}
    for name, p in placements.items():
        t = full[name] if fill else torch.zeros_like(full[name])
        model[name] = distribute_tensor(t, mesh, p)
    return {"model": model, "ids": full["ids"] if fill else torch.zeros_like(full["ids"])}


def check_dtensors(state) -> None:
    full = full_tensors()
    for name, dt in state["model"].items():
        same(dt.full_tensor(), full[name], name)
    same(state["ids"], full["ids"], "ids")


def scenario_dtensor_save(rank, world, path):
    import ckptio.dist as cd

    state = dtensor_state(world, fill=True)
    state["extra"] = {"epoch": 3, "lr": 0.5, "tags": ["a", "b"], "none": None,
                      "rank_seed": 100 + rank}
    cd.save(state, path)


def scenario_dtensor_load(rank, world, path):
    import ckptio.dist as cd
    from ckptio import errors

    state = dtensor_state(world, fill=False)
    state["extra"] = {"epoch": 0, "lr": 0.0, "tags": [], "none": 1}
    if world == 4:
        state["extra"]["rank_seed"] = -1
    cd.load(state, path)
    check_dtensors(state)
    assert state["extra"]["epoch"] == 3 and state["extra"]["lr"] == 0.5
    assert state["extra"]["tags"] == ["a", "b"] and state["extra"]["none"] is None
    if world == 4:
        assert state["extra"]["rank_seed"] == 100 + rank
    else:
        # Saved per rank on 4 ranks: no rule says what fewer ranks get.
        try:
            cd.load({"extra": {"rank_seed": 0}}, path)
        except errors.MismatchError as e:
            assert "rank_seed" in str(e) and "rank 0 failed" in str(e), e
        else:
            raise AssertionError("a per-rank value loaded on another world size")


ZERO_SHAPES = {"exp_avg": (5, 3), "master": (7,), "tiny": (2,)}


def zero_full():
    g = torch.Generator().manual_seed(7)
    return {k: torch.randn(*s, generator=g) for k, s in ZERO_SHAPES.items()}


def scenario_zero_save(rank, world, path):
    import ckptio.dist as cd

    state = {"optim": {k: cd.zero_partition(t, rank, world) for k, t in zero_full().items()}}
    cd.save(state, path)


def scenario_zero_load(rank, world, path):
    import ckptio.dist as cd

    full = zero_full()
    state = {"optim": {}}
    for k, t in full.items():
        part = cd.zero_partition(t, rank, world)
        part.tensor.fill_(float("nan"))  # padding must come back as zeros, data as saved
        state["optim"][k] = part
    cd.load(state, path)
    for k, t in full.items():
        same(state["optim"][k].tensor, cd.zero_partition(t, rank, world).tensor, k)
    # The same checkpoint as whole tensors.
    whole = {"optim": {k: torch.zeros_like(t) for k, t in full.items()}}
    cd.load(whole, path)
    for k, t in full.items():
        same(whole["optim"][k], t, k)


class Counter:
    """A Stateful object with plain data only."""

    def __init__(self):
        self.seen, self.name = 0, ""

    def state_dict(self):
        return {"seen": self.seen, "name": self.name, "history": [1, 2.5, "x"]}

    def load_state_dict(self, sd):
        self.seen, self.name, self.history = sd["seen"], sd["name"], sd["history"]


def make_objects(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3)
    return model, opt, sched


def scenario_objects_save(rank, world, path):
    import ckptio.dist as cd

    model, opt, sched = make_objects(0)
    sched.step()
    counter = Counter()
    counter.seen, counter.name = 42, "run-1"
    cd.save({"model": model, "optim": opt, "sched": sched, "counter": counter}, path)


def scenario_objects_load(rank, world, path):
    import ckptio.dist as cd

    ref_model, ref_opt, ref_sched = make_objects(0)
    ref_sched.step()
    model, opt, sched = make_objects(99)  # other weights and optimizer state
    counter = Counter()
    cd.load({"model": model, "optim": opt, "sched": sched, "counter": counter}, path)
    for (k, a), b in zip(model.state_dict().items(), ref_model.state_dict().values()):
        same(a, b, k)
    for p, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            same(v, ref_opt.state_dict()["state"][p][k], f"optim {p} {k}")
    assert opt.state_dict()["param_groups"] == ref_opt.state_dict()["param_groups"]
    assert sched.state_dict() == ref_sched.state_dict(), (sched.state_dict(), ref_sched.state_dict())
    assert (counter.seen, counter.name, counter.history) == (42, "run-1", [1, 2.5, "x"])


def scenario_async_save_fails(rank, world, path):
    """A rank whose state cannot be saved (a plain value that is no JSON data) fails the async save
    of every rank through its future: the call itself returns once this rank's copy is made, the
    ranks' agreement runs in the background."""
    import ckptio.dist as cd
    from ckptio import errors

    group = dist.new_group(backend="gloo")
    state = {"t": torch.arange(4, dtype=torch.float32) + rank, "step": 5}
    if rank == 1:
        state["bad"] = object()
    future = cd.async_save(state, path, group)
    try:
        future.result()
    except errors.InvalidArgumentError as e:
        assert "rank 1 failed" in str(e) and "bad" in str(e), e
    else:
        raise AssertionError("async save succeeded with a bad value on rank 1")
    assert not os.path.exists(path)


def scenario_async_save(rank, world, path):
    import ckptio.dist as cd

    group = dist.new_group(backend="gloo")  # the background thread's own group
    t = torch.arange(6, dtype=torch.float32) + rank
    future = cd.async_save({"t": cd.FlatShard(t, (world * 6,), rank * 6), "step": 5}, path, group)
    t.fill_(-1)  # after staging: must not reach the files
    future.result()
    back = {"t": cd.FlatShard(torch.zeros(6), (world * 6,), rank * 6), "step": 0}
    cd.load(back, path)
    same(back["t"].tensor, torch.arange(6, dtype=torch.float32) + rank, "t")
    assert back["step"] == 5


def scenario_fail_python(rank, world, path):
    import ckptio.dist as cd
    from ckptio import errors

    state = {"t": torch.ones(3), "bad": object() if rank == 1 else 1}
    try:
        cd.save(state, path)
    except errors.InvalidArgumentError as e:
        assert "rank 1 failed" in str(e) and "'bad'" in str(e), e
    else:
        raise AssertionError("save succeeded with a bad value on rank 1")
    assert not os.path.exists(path)


def scenario_fail_core(rank, world, path):
    import ckptio.dist as cd
    from ckptio import errors

    # Rank 1's range lies past the tensor's end (all padding), so elements 4..7 have no owner:
    # the coordinator finds it when it builds the index, and every rank hears of it.
    begin = 0 if rank == 0 else 100
    try:
        cd.save({"t": cd.FlatShard(torch.ones(4), (8,), begin)}, path)
    except errors.InvalidArgumentError as e:
        assert "cover 4 of 8" in str(e), e
    else:
        raise AssertionError("save succeeded with a bad range on rank 1")
    assert not os.path.exists(path)
    # A load that fails on one rank only (a missing key) raises on every rank.
    good = os.path.join(os.path.dirname(path), "good")
    cd.save({"t": torch.arange(4)}, good)
    state = {"t": torch.zeros(4, dtype=torch.int64)}
    if rank == 1:
        state["missing"] = torch.zeros(2)
    try:
        cd.load(state, good)
    except errors.NotFoundError as e:
        assert "rank 1 failed" in str(e) and "missing" in str(e), e
    else:
        raise AssertionError("load succeeded with a missing key on rank 1")


def scenario_dcp_save(rank, world, path):
    import torch.distributed.checkpoint as dcp

    state = dtensor_state(world, fill=True)
    state["step"] = 17
    dcp.save(state, checkpoint_id=path)


class _RecordingDcpReader:
    """ckptio._core.DcpReader that records where each box was read to, and refuses the
    temporary-tensor path (read_box) for the boxes a load can read in place."""

    calls: list = []

    def __init__(self, path):
        self._reader = _RecordingDcpReader.real(path)

    def __getattr__(self, name):
        return getattr(self._reader, name)

    def read_box(self, name, offsets, sizes):
        raise AssertionError(f"'{name}' was read into a temporary (read_box), not in place")

    def read_box_into(self, name, offsets, sizes, raw):
        _RecordingDcpReader.calls.append((name, raw.ctypes.data, raw.nbytes))
        return self._reader.read_box_into(name, offsets, sizes, raw)


def scenario_dcp_load(rank, world, path):
    import ckptio.dist as cd
    from ckptio import _core

    state = dtensor_state(world, fill=False)
    state["step"] = 0
    # Every box is read straight into the memory of the tensor it fills: the local shard of each
    # DTensor, the plain tensor itself.
    _RecordingDcpReader.real = _core.DcpReader
    _core.DcpReader = _RecordingDcpReader
    try:
        cd.load(state, path)
    finally:
        _core.DcpReader = _RecordingDcpReader.real
    check_dtensors(state)
    assert state["step"] == 17
    targets = {f"model.{k}": v.to_local() for k, v in state["model"].items()}
    targets["ids"] = state["ids"]
    where = {name: (ptr, n) for name, ptr, n in _RecordingDcpReader.calls}
    assert sorted(where) == sorted(targets), (sorted(where), sorted(targets))
    for name, t in targets.items():
        assert where[name] == (t.data_ptr(), t.numel() * t.element_size()), (name, where[name])


def scenario_hf_read(rank, world, path):
    """Stock PyTorch reads a ckptio checkpoint; this process never imports ckptio."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    assert "ckptio" not in sys.modules
    full = full_tensors()
    # The dotted keys of dtensor_state; HuggingFaceStorageReader gives plain tensors.
    state = {f"model.{k}": torch.zeros_like(full[k]) for k in ("w", "b", "r")}
    state["ids"] = torch.zeros_like(full["ids"])
    dcp.load(state, storage_reader=HuggingFaceStorageReader(path))
    for k in ("w", "b", "r"):
        same(state[f"model.{k}"], full[k], k)
    same(state["ids"], full["ids"], "ids")
    assert "ckptio" not in sys.modules


class StepSampler:
    """Open-Sora's VariableVideoBatchSampler keeps its position through state_dict(step)."""

    def __init__(self):
        self.last_micro_batch_access_index = 0

    def state_dict(self, num_steps):
        return {"seed": 1024, "epoch": 2, "last_micro_batch_access_index": num_steps * 4}

    def load_state_dict(self, sd):
        self.last_micro_batch_access_index = sd["last_micro_batch_access_index"]


def scenario_opensora(rank, world, path):
    import copy

    from ckptio import opensora

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.LayerNorm(3))  # 15, 3, 3, 3
    ema = copy.deepcopy(model)
    with torch.no_grad():
        for p in ema.parameters():
            p.mul_(2)
    full_ema = {k: v.clone() for k, v in ema.state_dict().items()}
    shapes = opensora.record_model_param_shape(ema)
    opensora.model_sharding(ema)
    assert ema[0].weight.numel() == (15 + (world - 15 % world) % world) // world
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 5)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2)
    io = opensora.CheckpointIO()
    saved = []
    for update in (1, 2, 3):
        saved.append(io.save(None, path, model=model, ema=ema, optimizer=opt, lr_scheduler=sched,
                             sampler=StepSampler(), epoch=0, step=update * 2,
                             global_step=update * 2, batch_size=4, actual_update_step=update,
                             ema_shape_dict=shapes, async_io=update != 2))
    io._sync_io()
    assert saved[-1] == os.path.join(path, "epoch0-global_step3")
    dist.barrier()
    opensora.rm_checkpoints(path, keep_n_latest=2)
    dist.barrier()
    assert sorted(os.listdir(path)) == ["epoch0-global_step2", "epoch0-global_step3"]

    # Resume: fresh objects, the EMA unsharded (as Open-Sora loads it), then sharded again.
    torch.manual_seed(5)
    model2 = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.LayerNorm(3))
    ema2 = copy.deepcopy(model2)
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.1, momentum=0.9)
    model2(torch.randn(2, 5)).sum().backward()
    opt2.step()
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=2)
    sampler2 = StepSampler()
    epoch, step = io.load(None, saved[-1], model=model2, ema=ema2, optimizer=opt2,
                          lr_scheduler=sched2, sampler=sampler2)
    assert (epoch, step) == (0, 6)
    assert sampler2.last_micro_batch_access_index == 24
    for k, v in model.state_dict().items():
        same(model2.state_dict()[k], v, k)
    for k, v in full_ema.items():
        same(ema2.state_dict()[k], v, "ema " + k)
    same(opt2.state_dict()["state"][0]["momentum_buffer"],
         opt.state_dict()["state"][0]["momentum_buffer"], "momentum")
    # An EMA already sharded loads its partitions.
    ema3 = copy.deepcopy(model2)
    opensora.model_sharding(ema3)
    io.load(None, saved[-1], ema=ema3)
    for (k, v), p in zip(ema.named_parameters(), ema3.parameters()):
        same(p.data, v.data, "ema partition " + k)
    # Inference: one EMA state dict from the checkpoint, in one process.
    if rank == 0:
        infer = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.LayerNorm(3))
        opensora.load_checkpoint(infer, saved[-1], cai_model_name="ema")
        for k, v in full_ema.items():
            same(infer.state_dict()[k], v, "inference " + k)


def scenario_checkpoint_io(rank, world, path):
    import warnings

    import ckptio.dist as cd

    def objects(seed):
        model, opt, sched = make_objects(seed)
        g = torch.Generator().manual_seed(seed)
        ema = {"w": cd.zero_partition(torch.randn(9, generator=g), rank, world)}
        return model, opt, sched, ema

    io = cd.CheckpointIO(path, keep_n_latest=2, async_save=True)
    model, opt, sched, ema = objects(0)
    counter = Counter()
    for step in (10, 20, 30):
        counter.seen = step
        io.save(model=model, ema=ema, optimizer=opt, lr_scheduler=sched, sampler=counter,
                epoch=1, step=step, global_step=step, batch_size=8, extra={"cfg": {"lr": 0.1}})
    io.wait()
    dist.barrier()
    assert [os.path.basename(p) for p in io.list()] == ["epoch1-global_step30",
                                                        "epoch1-global_step20"], io.list()
    model2, opt2, sched2, ema2 = objects(1)
    counter2 = Counter()
    got = io.load(model=model2, ema=ema2, optimizer=opt2, lr_scheduler=sched2, sampler=counter2)
    assert got["global_step"] == 30 and got["extra"] == {"cfg": {"lr": 0.1}}, got
    assert counter2.seen == 30
    same(ema2["w"].tensor, ema["w"].tensor, "ema")
    for k, v in model.state_dict().items():
        same(model2.state_dict()[k], v, k)
    # The newest checkpoint loses a data file: "latest" falls back to the one before.
    dist.barrier()
    newest = io.list()[0]
    if rank == 0:
        victim = sorted(f for f in os.listdir(newest) if f.endswith(".safetensors"))[-1]
        os.remove(os.path.join(newest, victim))
    dist.barrier()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = io.load(model=model2, ema=ema2, sampler=counter2)
    assert got["global_step"] == 20 and counter2.seen == 20, got
    assert any("skipping checkpoint" in str(w.message) for w in caught)


def scenario_timeout_core(rank, world, path):
    """As scenario_timeout, but rank 1 leaves after the Python side's agreement, so rank 0 times
    out inside the C++ core's collectives (called back into Python)."""
    import ckptio.dist as cd

    if rank == 1:
        cd._write = lambda *args: {}  # prepares the save with rank 0, then skips the core
        cd.save({"t": torch.ones(2)}, path)
    scenario_timeout(rank, world, path)


def scenario_timeout(rank, world, path):
    """Rank 1 never joins the save: rank 0 raises TimeoutError after the group's timeout (set by
    CKPTIO_TEST_PG_TIMEOUT_S in main), then tells rank 1 through a file that it may leave."""
    import ckptio.dist as cd
    from ckptio import errors

    flag = path + ".rank0-done"
    if rank == 0:
        try:
            cd.save({"t": torch.ones(2)}, path)
        except errors.TimeoutError as e:
            assert "rank 0" in str(e), e
        else:
            raise AssertionError("save returned without rank 1")
        finally:  # rank 1 leaves whatever rank 0's outcome
            open(flag, "w").close()
    else:
        import time

        while not os.path.exists(flag):  # waits for rank 0's outcome, not for a duration
            time.sleep(0.05)
    assert not os.path.exists(path)
    sys.stdout.flush()
    os._exit(0)  # the group is broken: skip the final barrier and teardown


def scenario_checkpoint_io_staging(rank, world, path):
    """CheckpointIO's async saves copy into memory reused from one save to the next: each
    checkpoint holds the values of its own save() call, whatever the tensors hold afterwards."""
    import ckptio.dist as cd
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Shard

    mesh = init_device_mesh("cpu", (world,))
    local = torch.zeros(3, 4)
    state = {"w": DTensor.from_local(local, mesh, [Shard(0)], run_check=False),
             "b": torch.zeros(5, dtype=torch.bfloat16)}
    io = cd.CheckpointIO(path, async_save=True)
    buffers = []
    for step in (1, 2, 3):
        local.fill_(step * 10 + rank)
        state["b"].fill_(step)
        io.save(model=state, epoch=0, step=step, global_step=step)
        buffers.append(io._staging._buf.data_ptr())
        local.fill_(-1)  # after save() returned: must not reach any checkpoint
        state["b"].fill_(-1)
    io.wait()
    assert buffers[0] == buffers[1] == buffers[2], "the staging memory was not reused"
    for step in (1, 2, 3):
        back_local = torch.zeros(3, 4)
        back = {"w": DTensor.from_local(back_local, mesh, [Shard(0)], run_check=False),
                "b": torch.zeros(5, dtype=torch.bfloat16)}
        io.load(os.path.join(path, f"epoch0-global_step{step}"), model=back)
        same(back_local, torch.full((3, 4), float(step * 10 + rank)), f"w at step {step}")
        same(back["b"], torch.full((5,), float(step), dtype=torch.bfloat16), f"b at step {step}")


def scenario_checkpoint_io_item_cache(rank, world, path):
    """CheckpointIO reuses the items of its previous save for leaves whose layout did not change
    (no box worked out again), and works them out again for any leaf that changed: new memory
    under the same key, another global shape or placement. Every checkpoint holds its own save's
    values, sync and async."""
    import ckptio.dist as cd
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Replicate, Shard

    mesh = init_device_mesh("cpu", (world,))
    boxes = []
    real_box = cd._dtensor_box

    def counting_box(key, dt):
        boxes.append(key)
        return real_box(key, dt)

    cd._dtensor_box = counting_box

    def dt(local, placements, shape=None):
        return DTensor.from_local(local, mesh, placements, run_check=False, shape=shape,
                                  stride=None if shape is None else (shape[1], 1))

    for async_save in (False, True):
        root = os.path.join(path, "async" if async_save else "sync")
        io = cd.CheckpointIO(root, async_save=async_save)
        w_local, v_local = torch.full((2, 4), 1.0 + rank), torch.full((3,), 2.0 + rank)
        state = {"w": dt(w_local, [Shard(0)]), "v": dt(v_local, [Shard(0)]),
                 "b": torch.full((5,), 3.0)}
        expected = {}

        def save(step):
            boxes.clear()
            io.save(model=state, epoch=0, step=step, global_step=step)
            expected[step] = {"w": state["w"].full_tensor().clone(),
                              "v": state["v"].full_tensor().clone(), "b": state["b"].clone()}
            return sorted(boxes)

        assert save(1) == ["model.v", "model.w"]
        w_local.fill_(10.0 + rank)  # in place: same memory, nothing to work out again
        assert save(2) == [], "unchanged leaves were worked out again"
        state["w"] = dt(torch.full((2, 4), 20.0 + rank), [Shard(0)])  # new memory
        state["b"] = torch.full((7,), 4.0)  # another shape
        assert save(3) == ["model.w"]
        state["v"] = dt(v_local, [Replicate()])  # another placement, same memory
        v_local.fill_(5.0)
        assert save(4) == ["model.v"]
        # One more row, on rank 0 (torch's Shard gives the first ranks the larger pieces): new
        # memory there, another global shape over the same memory elsewhere.
        local = state["w"].to_local()
        if rank == 0:
            local = torch.cat([local, torch.full((1, 4), 30.0)])
        state["w"] = dt(local, [Shard(0)], shape=(2 * world + 1, 4))
        assert save(5) == ["model.w"]
        io.wait()
        for step, values in expected.items():
            back = {"w": dt(torch.zeros_like(state["w"].to_local()) if step == 5 else
                            torch.zeros(2, 4), [Shard(0)],
                            shape=(2 * world + 1, 4) if step == 5 else None),
                    "v": dt(torch.zeros(3), [Replicate()]) if step >= 4 else
                    dt(torch.zeros(3), [Shard(0)]),
                    "b": torch.zeros(7 if step >= 3 else 5)}
            io.load(os.path.join(root, f"epoch0-global_step{step}"), model=back)
            for key in ("w", "v", "b"):
                got = back[key].full_tensor() if key != "b" else back[key]
                same(got, values[key], f"{key} at step {step} ({'async' if async_save else 'sync'})")
    cd._dtensor_box = real_box


def scenario_checkpoint_io_partial(rank, world, path):
    """A DTensor with a Partial placement is reduced (a collective) at every save on every rank,
    never taken from the item cache: on a 2x2 mesh with [Partial(), Shard(0)] the ranks at
    coordinate 1 of the first dimension save nothing of the result, and one that skipped the
    reduction at the second save would leave the others alone in it until the timeout. Both
    saves of the unchanged state hold the sum."""
    import ckptio.dist as cd
    from torch.distributed.tensor import DTensor, Partial, Shard

    mesh = mesh_for(world)
    io = cd.CheckpointIO(path)
    row = mesh.get_coordinate()[1]
    local = torch.full((3, 2), float(rank + 1))
    for step in (1, 2):
        state = {"p": DTensor.from_local(local, mesh, [Partial(), Shard(0)], run_check=False)}
        io.save(model=state, epoch=0, step=step, global_step=step)
    # Ranks sharing a row block (the same second coordinate) add up.
    total = float(sum(r + 1 for r in range(world) if r % 2 == row))
    for step in (1, 2):
        back = {"p": torch.zeros(6, 2)}
        io.load(os.path.join(path, f"epoch0-global_step{step}"), model=back)
        same(back["p"][3 * row:3 * row + 3], torch.full((3, 2), total), f"p at step {step}")


def scenario_comm_sizes(rank, world, path):
    """TorchCommunicator moves any byte string exactly: empty, within its first round (4 KiB),
    at its edge and past it, different sizes on different ranks."""
    from ckptio.dist import TorchCommunicator

    comm = TorchCommunicator()

    def payload(n, seed):
        return bytes((i * 7 + seed) % 256 for i in range(n))

    for sizes in ([0, 0, 0], [3, 0, 5], [4096, 4095, 4097], [0, 10000, 4096], [9000, 9000, 1]):
        got = comm.all_gather(payload(sizes[rank], rank))
        assert got == [payload(n, r) for r, n in enumerate(sizes)], (sizes, [len(g) for g in got])
    for n in (0, 1, 4096, 4097, 20000):
        for root in range(world):
            data = payload(n, root) if rank == root else b"ignored" * (rank + 1)
            assert comm.broadcast(data, root) == payload(n, root), (n, root)


def main() -> int:
    scenario, rank, world, init_file, path = sys.argv[1:6]
    rank, world = int(rank), int(world)
    import datetime

    timeout = datetime.timedelta(seconds=float(os.environ.get("CKPTIO_TEST_PG_TIMEOUT_S", "600")))
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world, timeout=timeout)
    try:
        globals()[f"scenario_{scenario}"](rank, world, path)
        dist.barrier()
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)  # do not wait in destroy_process_group for ranks that may be gone
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
