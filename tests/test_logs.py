"""One logging setup for every command: stderr, levels, rank 0 alone under several processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = (
    "import logging; from aria.logs import setup_logging; setup_logging(); "
    "logging.getLogger('aria.probe').info('told'); print('result')"
)


def run(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True
    )


def test_a_message_goes_to_stderr_and_the_result_to_stdout(monkeypatch):
    out = run({"PATH": "/usr/bin:/bin"})
    assert out.stdout == "result\n"
    assert "INFO aria.probe: told" in out.stderr


def test_only_rank_0_logs_below_warning():
    assert "told" not in run({"RANK": "1"}).stderr
    assert "told" in run({"RANK": "0"}).stderr


def test_the_level_comes_from_aria_log_level():
    assert "told" not in run({"ARIA_LOG_LEVEL": "WARNING"}).stderr
