"""Session fixture: ONE real vLLM server on the tiny model for every live test.

Register it from tests/conftest.py (`pytest_plugins = ["tests.fixtures_serving", ...]`). The model is
`tiny_base_model` (tests/fixtures_training.py) unless ARIA_TEST_MODEL names a model folder (e.g. a
trained aria-ft-dpo), in which case no tiny model is built. Skipped, with the reason, only when vLLM is
not installed; a server that fails to start is an error, with the end of its log.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

LIVE_API_KEY = "aria-test-key"
LIVE_SERVED_NAME = "aria-ft"
LIVE_MAX_MODEL_LEN = 4096
LIVE_KV_CACHE_GIB = 1
LIVE_READY_TIMEOUT_S = 900.0  # a cold start compiles the model (minutes on 2 CPU cores)


@dataclass(frozen=True)
class LiveServer:
    """What a live test needs to reach the session's server."""

    base_url: str  # http://127.0.0.1:<port>/v1
    root_url: str  # http://127.0.0.1:<port> (/health)
    port: int
    api_key: str
    served_name: str
    model_path: Path
    max_model_len: int
    start_seconds: float  # process start → /health 200
    pid: int
    log_path: Path


@pytest.fixture(scope="session")
def live_server(request: pytest.FixtureRequest):
    """Start the session's vLLM server (free port, API key, 1 GiB KV cache); stop it at the end."""
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not installed (install the cpu or gpu engine profile: make install)")
    from aria.settings import get_settings
    from serve.process import free_port, start_server

    override = os.environ.get("ARIA_TEST_MODEL")
    model = Path(override) if override else Path(request.getfixturevalue("tiny_base_model"))
    port = free_port()
    log_path = Path(tempfile.mkdtemp(prefix="aria-live-")) / f"vllm-{port}.log"
    handle = start_server(
        model,
        port,
        LIVE_SERVED_NAME,
        LIVE_API_KEY,
        max_model_len=LIVE_MAX_MODEL_LEN,
        kv_cache_gib=LIVE_KV_CACHE_GIB,
        log_path=log_path,
        settings=get_settings(),
    )
    try:
        start_seconds = handle.wait_ready(LIVE_READY_TIMEOUT_S)
        yield LiveServer(
            base_url=handle.base_url,
            root_url=handle.root_url,
            port=port,
            api_key=LIVE_API_KEY,
            served_name=LIVE_SERVED_NAME,
            model_path=model,
            max_model_len=LIVE_MAX_MODEL_LEN,
            start_seconds=start_seconds,
            pid=handle.pid,
            log_path=log_path,
        )
    finally:
        handle.stop()
