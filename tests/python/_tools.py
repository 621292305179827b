"""Where the tests find the C++ programs the build made (build/bin/ckptio, build/bin/train-demo)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("CKPTIO_BIN_DIR", REPO / "build" / "bin"))


def tool(name: str) -> Path:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{path} is not built (make release)")
    return path


def run(*args, check: bool = True, env=None, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result
