"""Settings from .env and the environment; atomic outputs and file:line errors."""

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from aria.files import DataError, atomic_dir, atomic_write_jsonl, read_jsonl
from aria.settings import Settings, format_validation_error

ENV_EXAMPLE = Path(__file__).resolve().parent.parent / ".env.example"


def test_defaults_are_the_tiny_profile_and_the_seed_port(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no .env here
    s = Settings()
    assert s.aria_profile == "tiny"
    assert s.vllm_port == 8001
    assert s.model_dir("aria-ft-dpo") == Path("data/models/tiny/aria-ft-dpo")
    assert s.base_model() == "data/models/tiny/base"
    assert s.base_url == "http://127.0.0.1:8001/v1"


def test_medgemma_profile_trains_on_the_converted_base(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ARIA_PROFILE", "medgemma")
    s = Settings()
    assert s.stage_model("base") == "data/models/medgemma/base"  # make convert-base
    assert s.base_source() == "google/medgemma-4b-it"
    assert s.stage_model("aria-ft-sft") == "data/models/medgemma/aria-ft-sft"


def test_dotenv_is_read_and_environment_wins(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("VLLM_PORT=9100\nVLLM_SERVED_NAME=from-dotenv\n")
    monkeypatch.setenv("VLLM_SERVED_NAME", "from-env")
    s = Settings()
    assert (s.vllm_port, s.vllm_served_name) == (9100, "from-env")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VLLM_PORT", "eighty"),
        ("VLLM_PORT", "70000"),
        ("ARIA_PROFILE", "gpt"),
        ("VLLM_GPU_MEMORY_UTILIZATION", "1.5"),
    ],
)
def test_bad_value_names_the_variable(monkeypatch, tmp_path, name, value):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as info:
        Settings()
    assert name in format_validation_error(info.value)


def test_secrets_never_print(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_TOKEN", "hf_supersecret")
    monkeypatch.setenv("VLLM_API_KEY", "key-supersecret")
    s = Settings()
    assert "supersecret" not in repr(s) and "supersecret" not in str(s.model_dump())
    assert s.api_key_value() == "key-supersecret"


def test_env_example_documents_every_setting_in_one_comment_line():
    lines = ENV_EXAMPLE.read_text().splitlines()
    names = [line.split("=", 1)[0] for line in lines if line and not line.startswith("#")]
    assert sorted(n.lower() for n in names) == sorted(Settings.model_fields)
    for i, line in enumerate(lines):
        if line and not line.startswith("#"):
            assert lines[i - 1].startswith("# "), f"{line} has no comment line above it"


def test_atomic_dir_keeps_the_previous_folder_on_error(tmp_path):
    final = tmp_path / "model"
    with atomic_dir(final) as tmp:
        (tmp / "weights").write_text("v1")
    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        (tmp / "weights").write_text("half")
        raise RuntimeError("killed")
    assert (final / "weights").read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_read_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "x.jsonl"
    atomic_write_jsonl(path, [{"a": 1}, {"a": 2}])
    with path.open("a") as f:
        f.write("{not json\n")
    with pytest.raises(DataError, match=rf"{path}:3: not valid JSON"):
        read_jsonl(path)

    def positive(record):
        if record["a"] < 2:
            raise ValueError("a must be >= 2")
        return record

    path.write_text(json.dumps({"a": 5}) + "\n\n" + json.dumps({"a": 1}) + "\n")
    with pytest.raises(DataError, match=rf"{path}:3: a must be >= 2"):
        read_jsonl(path, positive)


def test_one_root_url_for_settings_and_launched_servers() -> None:
    from aria.settings import server_url
    from serve.process import ServerHandle

    settings = Settings(_env_file=None, vllm_host="::1", vllm_port=8005)
    assert settings.root_url == "http://[::1]:8005" == server_url("::1", 8005)
    assert settings.base_url == "http://[::1]:8005/v1"
    assert server_url("127.0.0.1", 8001) == "http://127.0.0.1:8001"
    handle = ServerHandle(None, "::1", 8005, "aria-ft", "m", None, Path("log"))  # type: ignore[arg-type]
    assert (handle.root_url, handle.base_url) == (settings.root_url, settings.base_url)
