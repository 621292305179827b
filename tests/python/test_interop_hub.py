"""ckptio and huggingface_hub share the Hub cache: what one downloads, the other finds offline.
Served by the project's fake Hub (tests/hub/fake_hub_server.py) on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import ckptio.torch as ct
from ckptio import errors
from _tools import REPO, run, tool

COMMIT = "0123456789abcdef0123456789abcdef01234567"
SERVER = REPO / "tests" / "hub" / "fake_hub_server.py"


@pytest.fixture
def hub(tmp_path: Path):
    """Serves org/tiny (model.safetensors over LFS, config.json) and yields (endpoint, files)."""
    state = tmp_path / "hub"
    state.mkdir()
    weights = {"layer.weight": torch.arange(12.0).reshape(3, 4), "layer.bias": torch.ones(3)}
    save_file(weights, state / "model.safetensors", metadata={"format": "pt"})
    (state / "config.json").write_text('{"hidden": 4}\n')
    files = {"model.safetensors": {"file": str(state / "model.safetensors"), "lfs": True},
             "config.json": {"file": str(state / "config.json"), "lfs": False}}
    (state / "repos.json").write_text(json.dumps(
        {"repos": {"org/tiny": {"refs": {"main": COMMIT}, "commits": {COMMIT: files}}}}))
    server = subprocess.Popen([sys.executable, str(SERVER), str(state), "--lifetime", "300"],
                              stdout=subprocess.PIPE, text=True)
    try:
        ports = json.loads(server.stdout.readline())
        yield f"http://127.0.0.1:{ports['hub']}", state
    finally:
        server.terminate()
        server.wait(timeout=30)


def hub_env(cache: Path, endpoint: str, offline: bool) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGING")) and k not in ("TRANSFORMERS_OFFLINE", "XDG_CACHE_HOME")}
    env.update(HF_HUB_CACHE=str(cache), HF_ENDPOINT=endpoint, HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_XET="1")
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


def hf_hub_download(env: dict, filename: str, local_files_only: bool) -> Path:
    code = ("import sys, huggingface_hub as h; print(h.hf_hub_download('org/tiny', sys.argv[1], "
            f"local_files_only={local_files_only}))")
    out = run(sys.executable, "-c", code, filename, env=env).stdout
    return Path(out.strip().splitlines()[-1])


def test_huggingface_hub_finds_what_ckptio_downloaded(tmp_path: Path, hub) -> None:
    endpoint, state = hub
    cache = tmp_path / "cache"
    run(tool("ckptio"), "download", "-q", "org/tiny", "model.safetensors", "config.json",
        env=hub_env(cache, endpoint, offline=False))
    env = hub_env(cache, "http://127.0.0.1:9", offline=True)  # nothing listens there
    for name in ("model.safetensors", "config.json"):
        path = hf_hub_download(env, name, local_files_only=True)
        assert path.read_bytes() == (state / name).read_bytes()
        assert COMMIT in str(path)


def test_ckptio_finds_offline_what_huggingface_hub_downloaded(tmp_path: Path, hub, monkeypatch) -> None:
    endpoint, state = hub
    cache = tmp_path / "cache"
    hf_hub_download(hub_env(cache, endpoint, offline=False), "model.safetensors", local_files_only=False)
    env = hub_env(cache, "http://127.0.0.1:9", offline=True)
    out = run(tool("ckptio"), "download", "-q", "org/tiny", "model.safetensors", env=env).stdout
    assert Path(out.strip().splitlines()[-1]).read_bytes() == (state / "model.safetensors").read_bytes()

    # load_checkpoint takes the hf:// source and reads the cached snapshot.
    use_env(monkeypatch, env)
    model = torch.nn.Module()
    model.layer = torch.nn.Linear(4, 3)
    assert ct.load_checkpoint(model, "hf://org/tiny").missing_keys == []
    assert torch.equal(model.layer.weight, torch.arange(12.0).reshape(3, 4))


def use_env(monkeypatch, env: dict) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in set(os.environ) - set(env):
        monkeypatch.delenv(key)


def test_load_checkpoint_downloads_hf_sources(tmp_path: Path, hub, monkeypatch) -> None:
    endpoint, state = hub
    use_env(monkeypatch, hub_env(tmp_path / "cache", endpoint, offline=False))
    tensors = ct.load_checkpoint(None, "hf://org/tiny/model.safetensors")
    assert torch.equal(tensors["layer.weight"], torch.arange(12.0).reshape(3, 4))
    assert (state / "requests.log").exists()
    assert (tmp_path / "cache" / "models--org--tiny" / "snapshots" / COMMIT / "model.safetensors").exists()


def test_plain_paths_never_reach_the_hub(tmp_path: Path, hub, monkeypatch) -> None:
    endpoint, state = hub
    use_env(monkeypatch, hub_env(tmp_path / "cache", endpoint, offline=False))
    monkeypatch.chdir(tmp_path)
    model = torch.nn.Linear(4, 3)
    for source in ("org/tiny", "org/tiny/model.safetensors"):
        with pytest.raises(errors.NotFoundError, match="hf://"):
            ct.load_checkpoint(model, source)
        with pytest.raises(FileNotFoundError):
            ct.load_checkpoint(None, source)
    assert not (state / "requests.log").exists()
    assert not (tmp_path / "cache").exists()
