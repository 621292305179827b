"""Training checkpoints cross between C++ and Python: one saved by the C++ dist::CheckpointIO
(examples/mpi_train.cpp on 2 MPI ranks) loads with ckptio.dist.CheckpointIO, and one saved by
ckptio.dist.CheckpointIO resumes in the C++ example on 2 ranks. Skipped without the mpi-train
program (built where MPI is found) or mpirun."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch.distributed")
sys.path.insert(0, str(Path(__file__).parent))
from _tools import run, tool  # noqa: E402

# As tests/dist/mpi runs mpirun: root in containers, no CMA, idle ranks yield.
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_btl_vader_single_copy_mechanism": "none",
           "OMPI_MCA_mpi_yield_when_idle": "1", "OMPI_MCA_rmaps_base_oversubscribe": "1"}

# The state examples/mpi_train.cpp holds after `step` steps, and its optimizer's param_groups.
PYTHON_SIDE = r"""
import sys
import torch
import torch.distributed as dist
from ckptio.dist import CheckpointIO

mode, exp, init = sys.argv[1:4]
dist.init_process_group("gloo", init_method="file://" + init, rank=0, world_size=1)
R, C = 64, 32
weight = lambda step: (torch.arange(R * C, dtype=torch.float32) + step).reshape(R, C)
moment = lambda step: (torch.arange(R * C, dtype=torch.float32) * step).reshape(R, C)
groups = [{"lr": 0.001, "params": [0]}]
io = CheckpointIO(exp)
if mode == "load":
    model = {"weight": torch.zeros(R, C)}
    opt = {"state": {"0": {"exp_avg": torch.zeros(R, C)}}, "param_groups": None}
    got = io.load(model=model, optimizer=opt)
    step = got["global_step"]
    assert (step, got["step"], got["batch_size"], got["extra"]) == (2, 2, 16, {}), got
    assert torch.equal(model["weight"], weight(step))
    assert torch.equal(opt["state"]["0"]["exp_avg"], moment(step))
    assert opt["param_groups"] == groups, opt
else:
    io.save(model={"weight": weight(5)},
            optimizer={"state": {0: {"exp_avg": moment(5)}}, "param_groups": groups},
            sampler={"position": 50}, epoch=0, step=5, global_step=5, batch_size=16,
            actual_update_step=5)
dist.destroy_process_group()
"""


def mpirun(n: int, *args) -> subprocess.CompletedProcess:
    launcher = shutil.which("mpirun")
    if launcher is None:
        pytest.skip("no mpirun")
    return run(launcher, "-n", n, "--oversubscribe", *args, env=dict(os.environ, **MPI_ENV))


def python_side(mode: str, exp: Path, tmp_path: Path) -> None:
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    run(sys.executable, "-c", PYTHON_SIDE, mode, exp, tmp_path / f"init-{mode}", env=env)


def test_cpp_training_checkpoint_loads_in_python(tmp_path):
    train = tool("mpi-train")
    exp = tmp_path / "exp"
    out = mpirun(2, train, exp, 2)
    assert "saved step 2 on 2 ranks" in out.stdout, out.stdout
    python_side("load", exp, tmp_path)


def test_python_training_checkpoint_resumes_in_cpp(tmp_path):
    train = tool("mpi-train")
    exp = tmp_path / "exp"
    python_side("save", exp, tmp_path)
    out = mpirun(2, train, exp, 1)
    assert "resumed step 5" in out.stdout and "(saved on 1 ranks) on 2 ranks" in out.stdout, out.stdout
    assert "saved step 6 on 2 ranks" in out.stdout, out.stdout
