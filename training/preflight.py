"""Checks a training stage runs before it loads anything heavy; each failure names its fix.

    >>> from training.preflight import require_dataset
    >>> require_dataset(Path("data/training/sft.jsonl"))  # SystemExit naming `make datasets`

The checks that read the settings (the profile, HF_TOKEN, the data folder) take the Settings their
stage's entry point resolved.

They refuse to train while a local vLLM server holds the GPU (the seed's rule: never train and
serve at once on one GPU), and stop early when the base model, the datasets or the SFT model
that DPO starts from are missing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aria.settings import MEDGEMMA_HUB_ID, STAGE_TARGETS, Settings, stage_target

log = logging.getLogger(__name__)

VLLM_SERVER_MODULE = "vllm.entrypoints.openai.api_server"


def require_dataset(path: Path) -> Path:
    """The dataset file, or SystemExit telling to run `make datasets`."""
    path = Path(path)
    if not path.exists():
        raise SystemExit(f"{path} does not exist: run `make datasets` first")
    return path


def is_local_model(name_or_path: str) -> bool:
    """True when the model is a folder on disk (tiny, merged stages), False for a Hub id."""
    return Path(name_or_path).exists() or name_or_path.startswith((".", "/", "data"))


def require_model(name_or_path: str, stage: str, settings: Settings) -> str:
    """A loadable model folder or a Hub id with a token; otherwise SystemExit naming the fix.

    `stage` is the ARIA stage the model is (`base`, `aria-ft-sft`), used to name its make target
    on the settings' profile; a Hub id needs the settings' (or the environment's) HF_TOKEN.
    """
    if is_local_model(name_or_path):
        config = Path(name_or_path) / "config.json"
        if not config.exists():
            raise SystemExit(
                f"model folder {name_or_path} is missing or incomplete (no config.json): "
                f"{missing_model_fix(stage, settings.aria_profile)}"
            )
        if stage == "base" and "vision_config" in json.loads(config.read_text()):
            raise SystemExit(
                f"{name_or_path} is a multimodal Gemma 3: ARIA trains and serves the text-only "
                "Gemma3ForCausalLM. Convert it first: make convert-base "
                f"ARIA_BASE_SOURCE={name_or_path} (then train on data/models/<profile>/base)"
            )
        return name_or_path
    if hub_token(settings) is None and not _in_hub_cache(name_or_path):
        gated = " (gated: accept its terms on the Hub)" if name_or_path == MEDGEMMA_HUB_ID else ""
        raise SystemExit(
            f"{name_or_path}{gated} must be downloaded from the Hugging Face Hub: set HF_TOKEN "
            "in .env or the environment (or use ARIA_PROFILE=tiny and `make tiny-model`)"
        )
    return name_or_path


def missing_model_fix(stage: str, profile: str) -> str:
    """What to run when a stage's folder is missing on `profile`: `base` is built on tiny,
    converted on medgemma; `source` is the multimodal checkpoint that convert-base reads."""
    if stage == "source":
        return "set ARIA_BASE_SOURCE to a MedGemma folder or a Hub id (google/medgemma-4b-it)"
    if stage == "base" and profile == "medgemma":
        return (
            f"run `{stage_target(stage, profile)}` first "
            "(ARIA_BASE_SOURCE: a Hub id or a MedGemma folder)"
        )
    return f"run `{stage_target(stage, profile) if stage in STAGE_TARGETS else 'make tiny-model'}` first"


def hub_token(settings: Settings) -> str | None:
    """HF_TOKEN from the settings (the environment or .env); pass it to every Hub call (a library
    reads only the environment, never .env). Never printed."""
    token = settings.hf_token
    return (token.get_secret_value() or None) if token else None


def _http_status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def hub_refusal(error: BaseException, repo: str, token_set: bool) -> str | None:
    """The fix for a Hub download refused for access (401/403: gated, private, bad token), read
    from `error` or the errors it wraps (transformers turns them into OSError); None otherwise."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    seen: BaseException | None = error
    while seen is not None:
        status = _http_status(seen)
        gated = isinstance(seen, GatedRepoError) or "gated repo" in str(seen).lower()
        missing = isinstance(seen, RepositoryNotFoundError) and not gated and status == 404
        if missing:
            return (
                f"the Hugging Face Hub has no repo {repo} that this token can see (HTTP 404): "
                "check the id (ARIA_BASE_SOURCE, --model_name_or_path) and HF_TOKEN"
            )
        if gated or isinstance(seen, RepositoryNotFoundError) or status in (401, 403):
            why = "gated repo" if gated else f"HTTP {status}" if status else "no access"
            has = (
                "HF_TOKEN is set but its account has no access"
                if token_set
                else "HF_TOKEN is not set"
            )
            return (
                f"the Hugging Face Hub refused {repo} ({why}): {has}. Fix: accept the model's "
                f"terms at https://huggingface.co/{repo} with your account, then put "
                "HF_TOKEN=hf_... (a read token of that account) in .env or the environment"
            )
        seen = seen.__cause__ or seen.__context__
    return None


# What a model needs from its Hub repo (weights, configs, tokenizer, chat template).
HUB_MODEL_FILES = ["*.json", "*.safetensors", "*.model", "*.jinja", "*.txt"]


def local_model(name_or_path: str, settings: Settings, revision: str = "main") -> str:
    """A local folder for `name_or_path`: itself, or the Hub snapshot of a repo id, downloaded
    (or found in the Hub cache) with the settings' token. Every later load reads that folder, so
    no library call goes to the Hub without the token (some send none of their own)."""
    if is_local_model(name_or_path):
        return name_or_path
    from huggingface_hub import snapshot_download

    with hub_access(name_or_path, settings):
        return snapshot_download(
            name_or_path,
            revision=revision,
            token=hub_token(settings),
            allow_patterns=HUB_MODEL_FILES,
        )


@contextmanager
def hub_access(repo: str, settings: Settings) -> Iterator[None]:
    """Run Hub downloads of `repo`; an access refusal becomes a SystemExit naming HF_TOKEN."""
    try:
        yield
    except (OSError, ValueError) as error:
        message = hub_refusal(error, repo, hub_token(settings) is not None)
        if message is None:
            raise
        raise SystemExit(message) from None


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # an odd cache layout only means "not cached"
        return False


def running_vllm_servers(settings: Settings) -> list[str]:
    """Descriptions of local vLLM servers: pid files <data>/run/vllm-*.pid and api_server processes."""
    found: list[str] = []
    run_dir = settings.aria_data_dir / "run"
    for pid_file in sorted(run_dir.glob("vllm-*.pid")):
        try:
            pid = int(pid_file.read_text().strip())
        except ValueError:
            continue
        if Path(f"/proc/{pid}").exists():
            found.append(f"pid {pid} ({pid_file})")
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if VLLM_SERVER_MODULE.encode() in args:
            pid = cmdline.parent.name
            if not any(f"pid {pid} " in f for f in found):
                found.append(f"pid {pid} ({VLLM_SERVER_MODULE})")
    return found


def refuse_when_vllm_holds_gpu(settings: Settings) -> None:
    """On a GPU, SystemExit while a local vLLM server runs; on CPU only a warning."""
    import torch

    servers = running_vllm_servers(settings)
    if not servers:
        return
    listed = ", ".join(servers)
    if torch.cuda.is_available():
        raise SystemExit(
            f"a local vLLM server holds the GPU ({listed}): stop it with `make serve-stop` "
            "before training (never train and serve at once on one GPU)"
        )
    log.warning("a local vLLM server is running (%s); on CPU training still starts", listed)
