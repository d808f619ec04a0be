"""Shared session fixtures: one dataset, one tiny model and one vLLM server per test session.

The suite does not depend on the caller's settings: before any test, every variable that
aria.settings reads (VLLM_PORT, ARIA_PROFILE, HF_TOKEN, ...) is taken out of this process's
environment, and ARIA_ENV_FILE points at an empty file, so neither an exported variable nor the
developer's .env reaches a test or the commands it starts. A test sets what it needs.
"""

import os

pytest_plugins = [
    "tests.fixtures_data",
    "tests.fixtures_training",
    "tests.fixtures_serving",
]


def pytest_configure(config) -> None:
    from aria.settings import Settings

    for name in Settings.model_fields:
        os.environ.pop(name.upper(), None)
    os.environ["ARIA_ENV_FILE"] = os.devnull
