"""examples/python/train.py: killed in the middle of a save, resumed, bit-identical to a run that
was never interrupted (the story checks it and exits non-zero otherwise)."""

from __future__ import annotations

import sys
from pathlib import Path

from _tools import REPO, run


def test_training_example_resumes_bit_exactly_after_sigkill(tmp_path: Path) -> None:
    out = run(sys.executable, REPO / "examples" / "python" / "train.py", "--workdir", tmp_path / "w",
              "--steps", "40", "--ckpt-every", "10", timeout=600).stdout
    assert "killed by SIGKILL" in out and "-global_step30.tmp-" in out
    assert "-global_step20 (epoch" in out
    assert "bit-identical" in out
