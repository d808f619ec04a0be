"""Shared session fixtures: one dataset, one tiny model and one vLLM server per test session."""

pytest_plugins = [
    "tests.fixtures_data",
    "tests.fixtures_training",
    "tests.fixtures_serving",
]
