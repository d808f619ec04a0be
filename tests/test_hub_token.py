"""The real path's first contact with the gated Hub: HF_TOKEN only in the settings file reaches
every request (tests/hub_standin.py answers 401/403 as the Hub does for a gated repo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hub_standin import GatedHub

pytestmark = pytest.mark.engine
ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_standin_token_0123456789"
MEDGEMMA = "google/medgemma-4b-it"


@pytest.fixture(scope="module")
def twin(tiny_base_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny.twin import build_twin

    return build_twin(tmp_path_factory.mktemp("twin") / "medgemma-twin", tiny_base_model, seed=0)


def medgemma_env(tmp_path: Path, hub: GatedHub, env_token: str | None) -> dict[str, str]:
    """The medgemma profile against the stand-in, HF_TOKEN only in a settings file (or nowhere)."""
    env_file = tmp_path / "settings.env"
    env_file.write_text(f"HF_TOKEN={env_token}\n" if env_token else "")
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "ARIA_", "VLLM_"))}
    return keep | {
        "ARIA_ENV_FILE": str(env_file),
        "ARIA_PROFILE": "medgemma",
        "ARIA_DATA_DIR": str(tmp_path / "data"),
        "HF_ENDPOINT": hub.endpoint,
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }


def test_convert_base_fetches_the_gated_base_with_the_token_of_the_settings_file(tmp_path, twin):
    with GatedHub({MEDGEMMA: twin}, token=TOKEN) as hub:
        env = medgemma_env(tmp_path, hub, TOKEN)
        out = subprocess.run(
            ["make", "convert-base"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
        )
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert hub.requests, "nothing was fetched from the stand-in"
        assert not hub.unauthorized(), f"requests without the token: {hub.unauthorized()}"
    report = json.loads((tmp_path / "data/models/medgemma/base/conversion.json").read_text())
    assert report["source"] == MEDGEMMA and report["parity"]["passed"]
    assert TOKEN not in out.stdout + out.stderr


def test_sft_loads_a_hub_base_with_the_token_of_the_settings_file(tmp_path, twin):
    """SFT's loading of a Hub-id base (tokenizer and 4-bit model) goes through the token too."""
    script = (
        "from aria.settings import get_settings\n"
        "from training.config import parse_sft_args\n"
        "from training.preflight import hub_token, local_model\n"
        "from training.stages import load_tokenizer_and_model\n"
        "s = get_settings()\n"
        f"_, _, m = parse_sft_args(['--model_name_or_path', '{MEDGEMMA}', '--bf16', 'false',"
        " '--dtype', 'float32'], settings=s)\n"
        "folder = local_model(m.model_name_or_path, s, m.model_revision)\n"
        "tokenizer, model = load_tokenizer_and_model(folder, m, hub_token(s))\n"
        "print(type(model).__name__, tokenizer.chat_template is not None)\n"
    )
    with GatedHub({MEDGEMMA: twin}, token=TOKEN) as hub:
        env = medgemma_env(tmp_path, hub, TOKEN)
        out = subprocess.run(
            [sys.executable, "-c", script],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        assert hub.requests and not hub.unauthorized()
    assert out.stdout.split()[-1] == "True"


@pytest.mark.parametrize(
    ("env_token", "says"),
    [
        ("hf_other_account_token", "HF_TOKEN is set but its account has no access"),
        (None, "HF_TOKEN"),
    ],
)
def test_a_refused_download_names_the_setting_to_fix(tmp_path, twin, env_token, says):
    with GatedHub({MEDGEMMA: twin}, token=TOKEN) as hub:
        env = medgemma_env(tmp_path, hub, env_token)
        out = subprocess.run(
            ["make", "convert-base"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
        )
    assert out.returncode != 0
    assert says in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "data/models/medgemma/base").exists()
