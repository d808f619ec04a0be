"""Session fixture: the full default datasets, generated once per test session into a tmp folder.

Register it with `pytest_plugins = ["tests.fixtures_data"]` in tests/conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aria.settings import get_settings
from preparation.generate_datasets import GenerateConfig, main


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder with training/sft.jsonl, training/dpo.jsonl and eval/eval.jsonl (defaults)."""
    out = tmp_path_factory.mktemp("aria-data")
    main(GenerateConfig(out_dir=out), get_settings())
    return out
