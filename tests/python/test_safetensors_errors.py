"""Each ckptio::Error code reaches Python as its ckptio.errors class, with the CLI's one line."""

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from ckptio import errors
from ckptio import safetensors as cs
from ckptio.safetensors import numpy as cn

CLI = Path(__file__).resolve().parents[2] / "build" / "bin" / "ckptio"


def write_raw(path, header: dict, data: bytes = b""):
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)
    return path


def test_invalid_argument_for_a_reserved_tensor_name():
    with pytest.raises(errors.InvalidArgumentError) as e:
        cs.save({"__metadata__": torch.zeros(1)})
    assert isinstance(e.value, ValueError)
    assert str(e.value) == 'invalid_argument: "__metadata__" is reserved and cannot name a tensor'


def test_invalid_argument_for_a_folder(tmp_path):
    with pytest.raises(errors.InvalidArgumentError, match="is a directory"):
        cs.load_file(tmp_path)


def test_not_found_for_a_missing_file_and_tensor(tmp_path):
    with pytest.raises(errors.NotFoundError) as e:
        cs.load_file(tmp_path / "missing.safetensors")
    assert e.value.code == "not_found" and str(e.value).startswith("not_found: ")
    path = tmp_path / "a.safetensors"
    cs.save_file({"a": torch.zeros(1)}, path)
    with cs.safe_open(path) as f, pytest.raises(errors.NotFoundError, match='"b"'):
        f.get_tensor("b")


def test_not_found_when_the_folder_to_write_into_is_missing(tmp_path):
    with pytest.raises(errors.NotFoundError):
        cs.save_file({"a": torch.zeros(1)}, tmp_path / "no" / "a.safetensors")


def test_io_error_when_the_system_refuses(tmp_path):
    # ENAMETOOLONG: an operating-system failure that is neither ENOENT, EEXIST nor ENOSPC.
    with pytest.raises(errors.IoError) as e:
        cs.save_file({"a": torch.zeros(1)}, tmp_path / ("x" * 300))
    assert isinstance(e.value, OSError) and "File name too long" in str(e.value)


def test_corrupt_for_a_truncated_file_and_bad_offsets(tmp_path):
    bad = write_raw(tmp_path / "bad.safetensors",
                    {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"abcd")
    with pytest.raises(errors.CorruptError, match="bad.safetensors"):
        cs.load_file(bad)
    with pytest.raises(errors.CorruptError):
        cs.load(bad.read_bytes())
    with pytest.raises(errors.CorruptError):
        cs.load(b"\x00")


def test_unsupported_for_an_unknown_dtype(tmp_path):
    path = write_raw(tmp_path / "f3.safetensors",
                     {"a": {"dtype": "F3", "shape": [1], "data_offsets": [0, 1]}}, b"x")
    with pytest.raises(errors.UnsupportedError, match='unknown dtype "F3"'):
        cs.load_file(path)


def test_unsupported_for_dtypes_the_framework_lacks(tmp_path):
    path = write_raw(tmp_path / "f6.safetensors",
                     {"a": {"dtype": "F6_E2M3", "shape": [4], "data_offsets": [0, 3]},
                      "b": {"dtype": "BF16", "shape": [1], "data_offsets": [3, 5]}}, b"x" * 5)
    with pytest.raises(errors.UnsupportedError, match="tensor 'a': dtype F6_E2M3"):
        cs.load_file(path)
    with cs.safe_open(path, framework="np") as f:
        with pytest.raises(errors.UnsupportedError, match="tensor 'b': dtype BF16"):
            f.get_tensor("b")
    with pytest.raises(errors.UnsupportedError):
        cn.save({"a": np.array(["text"])})
    with pytest.raises(errors.UnsupportedError, match="framework 'tf'"):
        cs.safe_open(path, framework="tf")


def test_messages_are_one_line_even_for_names_with_control_characters(tmp_path):
    path = tmp_path / "a.safetensors"
    cs.save_file({"a": torch.zeros(1)}, path)
    with cs.safe_open(path) as f, pytest.raises(errors.NotFoundError) as e:
        f.get_tensor("b\n\x1b[31m")
    assert "\n" not in str(e.value) and "\x1b" not in str(e.value)
    assert "b\\x0a\\x1b[31m" in str(e.value)


@pytest.mark.skipif(not CLI.exists(), reason="the ckptio CLI is not built")
def test_messages_are_the_lines_the_cli_prints(tmp_path):
    bad = write_raw(tmp_path / "bad.safetensors",
                    {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"abcd")
    with pytest.raises(errors.CorruptError) as e:
        cs.load_file(bad)
    cli = subprocess.run([str(CLI), "inspect", str(bad)], capture_output=True, text=True)
    assert cli.returncode == 1
    assert cli.stderr == f"ckptio: error: {e.value}\n"
