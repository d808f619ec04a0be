"""scripts/demo.py with its heavy steps replaced: every step runs on the tiny profile, in this
process through the Settings it is given and in each child through the child's own environment."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import serve.process
from aria.settings import get_settings
from scripts import demo


class FakeServer:
    """What start_server returns, without a vLLM behind it."""

    def __init__(self, **kwargs) -> None:
        self.kwargs, self.stopped = kwargs, False
        self.base_url = f"http://127.0.0.1:{kwargs['port']}/v1"

    def wait_ready(self, timeout: float) -> float:
        return 0.0

    def stop(self) -> None:
        self.stopped = True


def test_the_demo_runs_on_tiny_and_leaves_os_environ_as_it_was(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("ARIA_PROFILE", "medgemma")  # the demo must not follow, nor change, it
    monkeypatch.setenv("ARIA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ARIA_REPORTS_DIR", str(tmp_path / "reports"))
    children: list[tuple[list[str], dict[str, str] | None]] = []
    servers: list[FakeServer] = []

    def run(command: list[str], env: dict[str, str] | None = None, **kwargs):
        children.append((command, env))
        return subprocess.CompletedProcess(command, 0)

    def start_server(**kwargs) -> FakeServer:
        servers.append(FakeServer(**kwargs))
        return servers[-1]

    monkeypatch.setattr(demo.subprocess, "run", run)
    monkeypatch.setattr(serve.process, "start_server", start_server)
    get_settings.cache_clear()
    try:
        before = dict(os.environ)
        code = demo.main(demo.DemoConfig(fresh=True), get_settings().for_profile(demo.PROFILE))
        assert dict(os.environ) == before
        assert get_settings().aria_profile == "medgemma"  # the cached settings are untouched
    finally:
        get_settings.cache_clear()

    assert code == 0
    assert [command[2] for command, _ in children] == [
        "preparation.generate_datasets",
        "tiny.build",
        "training.train_sft",
        "training.train_dpo",
        "serve.grammar_audit",
        "scripts.benchmark",
    ]
    for _, env in children:
        assert env is not None and env["ARIA_PROFILE"] == "tiny"
        assert env["ARIA_DATA_DIR"] == str(tmp_path / "data")
    models = tmp_path / "data" / "models" / "tiny"
    # The grammar audit reads the DPO model the servers are about to serve.
    assert children[4][0][3:] == ["--model", str(models / "aria-ft-dpo")]
    assert [s.kwargs["model"] for s in servers] == [
        models / "base",
        models / "aria-ft-sft",
        models / "aria-ft-dpo",
    ]
    assert all(s.kwargs["settings"].aria_profile == "tiny" for s in servers)
    assert all(s.stopped for s in servers)


def test_for_profile_switches_the_profile_and_refuses_an_unknown_one():
    settings = get_settings()
    tiny = settings.for_profile("tiny")
    assert tiny.aria_profile == "tiny" and tiny.aria_data_dir == settings.aria_data_dir
    assert settings.for_profile("medgemma").model_dir("base").parts[-2:] == ("medgemma", "base")
    with pytest.raises(ValueError, match="huge"):
        settings.for_profile("huge")
