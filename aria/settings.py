"""One typed settings object, read from the environment and `.env`.

    >>> from aria.settings import get_settings
    >>> s = get_settings()
    >>> s.model_dir("aria-ft-dpo")
    PosixPath('data/models/tiny/aria-ft-dpo')

Every variable has a default that works for the tiny profile on a laptop; `.env.example` documents
them. A bad value raises an error naming the variable; secrets are SecretStr and never print.

Entry points (a module's `main`, a CLI) resolve the settings once and pass them down; a step that
must run on another profile than the environment's takes `settings.for_profile(...)` rather than
changing os.environ.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Profile = Literal["medgemma", "tiny"]
Stage = Literal["base", "aria-ft-sft", "aria-ft-dpo"]
_SECRET_MARKERS = ("TOKEN", "KEY", "SECRET")
STAGES: tuple[str, ...] = get_args(Stage)
MEDGEMMA_HUB_ID = "google/medgemma-4b-it"
# The make target that produces each stage, named in "missing model" errors.
STAGE_TARGETS: dict[str, str] = {
    "base": "make tiny-model",
    "aria-ft-sft": "make train-sft",
    "aria-ft-dpo": "make train-dpo",
}


def stage_target(stage: str, profile: str) -> str:
    """The make target that produces `stage` on `profile`: the medgemma base is converted from
    MedGemma's multimodal checkpoint (`make convert-base`), the tiny one built."""
    if stage == "base" and profile == "medgemma":
        return "make convert-base"
    return STAGE_TARGETS[stage]


class Settings(BaseSettings):
    """Settings shared by every target; field names are the environment variables, case-insensitive."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # --- model profile and paths
    aria_profile: Profile = "tiny"
    aria_data_dir: Path = Path("data")
    aria_reports_dir: Path = Path("reports")
    # The multimodal MedGemma that `make convert-base` turns into the text-only base: a Hub id
    # or a local Gemma3ForConditionalGeneration folder; default: google/medgemma-4b-it.
    aria_base_source: str | None = None

    # --- serving (names of the seed)
    vllm_host: str = "127.0.0.1"
    vllm_port: int = Field(8001, ge=1, le=65535)
    vllm_model: str | None = None  # a path or Hub id; default: the profile's aria-ft-dpo
    vllm_served_name: str = "aria-ft"
    vllm_api_key: SecretStr | None = SecretStr("aria-local")
    vllm_max_model_len: int = Field(4096, ge=64)
    vllm_gpu_memory_utilization: float = Field(0.90, gt=0.0, le=1.0)
    vllm_cpu_kvcache_space: int = Field(2, ge=1)  # GiB of KV cache on a CPU server
    vllm_dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    vllm_tensor_parallel_size: int = Field(1, ge=1)
    vllm_pipeline_parallel_size: int = Field(1, ge=1)  # stages (nodes) the layers are split into
    vllm_data_parallel_size: int = Field(1, ge=1)  # engine copies behind one endpoint
    # mp: one host; ray: several nodes joined by `python -m serve.cluster` (ray start)
    vllm_distributed_executor_backend: Literal["auto", "mp", "ray"] = "auto"
    vllm_kv_cache_memory_bytes: int | None = Field(None, ge=1)  # fixed KV cache, GPU or CPU
    # GPU: the KV cache is what this budget leaves after weights and overhead (serve/memory_plan.py)
    vllm_memory_budget_gb: float = Field(9.5, gt=0)
    vllm_max_num_seqs: int = Field(16, ge=1)  # concurrent sequences of one engine
    vllm_quantization: Literal["none", "fp8"] = "none"  # fp8: online FP8 weights (docs/serving.md)
    # Lets vLLM answer a named tool_choice (instructor, LangChain's function_calling) through the
    # same guided decoding as response_format (docs/serving.md).
    vllm_tool_call_parser: str = "pythonic"
    ray_port: int = Field(6379, ge=1, le=65535)  # the Ray head's port on a multi-node server
    vllm_structured_output_backend: Literal["xgrammar", "guidance", "outlines"] = "xgrammar"
    vllm_request_timeout_s: float = Field(60.0, gt=0)

    # --- Hugging Face Hub
    hf_token: SecretStr | None = None
    hf_model_repo: str | None = None
    hf_dataset_repo: str | None = None

    @field_validator("vllm_kv_cache_memory_bytes", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """`VLLM_KV_CACHE_MEMORY_BYTES=` (as in .env.example) means unset, not a bad integer."""
        return None if isinstance(value, str) and not value.strip() else value

    def for_profile(self, profile: str) -> Settings:
        """These settings on `profile` (tiny or medgemma): its models, checkpoints and recipes."""
        if profile not in get_args(Profile):
            raise ValueError(f"unknown profile {profile!r}; expected one of {get_args(Profile)}")
        return self.model_copy(update={"aria_profile": profile})

    @property
    def training_dir(self) -> Path:
        """Where `make datasets` writes sft.jsonl and dpo.jsonl."""
        return self.aria_data_dir / "training"

    @property
    def eval_path(self) -> Path:
        """The held-out evaluation set."""
        return self.aria_data_dir / "eval" / "eval.jsonl"

    @property
    def models_dir(self) -> Path:
        """data/models/<profile>: every model this profile trains or builds."""
        return self.aria_data_dir / "models" / self.aria_profile

    def model_dir(self, stage: str) -> Path:
        """The folder of one stage (`base`, `aria-ft-sft`, `aria-ft-dpo`) of the active profile."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
        return self.models_dir / stage

    def base_model(self) -> str:
        """The base model of the profile: the MedGemma Hub id, or the local tiny model folder."""
        if self.aria_profile == "medgemma":
            return MEDGEMMA_HUB_ID
        return str(self.model_dir("base"))

    def base_source(self) -> str:
        """What `make convert-base` converts: ARIA_BASE_SOURCE, or the MedGemma Hub id."""
        return self.aria_base_source or MEDGEMMA_HUB_ID

    def stage_model(self, stage: str) -> str:
        """The local folder of a stage; on medgemma `base` is the text-only conversion of
        `base_source()` (make convert-base), on tiny the built tiny model (make tiny-model)."""
        return str(self.model_dir(stage))

    @property
    def root_url(self) -> str:
        """http://host:port of the configured server, where /health lives."""
        return server_url(self.vllm_host, self.vllm_port)

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL of the configured server (root_url + /v1)."""
        return f"{self.root_url}/v1"

    def api_key_value(self) -> str:
        """The API key in clear, for the HTTP header only; never print it. 'EMPTY' when unset."""
        return self.vllm_api_key.get_secret_value() if self.vllm_api_key else "EMPTY"


def server_url(host: str, port: int) -> str:
    """http://host:port of a server, an IPv6 host in brackets (where /health lives)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def format_validation_error(error: ValidationError) -> str:
    """A one-line-per-variable message naming each bad environment variable and why."""
    lines = ["invalid settings (fix them in .env or the environment):"]
    for err in error.errors():
        name = ".".join(str(p) for p in err["loc"]).upper()
        shown = "***" if any(s in name for s in _SECRET_MARKERS) else repr(err.get("input"))
        lines.append(f"  {name}: {err['msg']} (got {shown})")
    return "\n".join(lines)


def env_file() -> str:
    """The settings file: ARIA_ENV_FILE (another machine's or a test's), else `.env`."""
    import os

    return os.environ.get("ARIA_ENV_FILE") or ".env"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; raises SystemExit with a readable message on a bad value."""
    try:
        return Settings(_env_file=env_file())
    except ValidationError as error:
        raise SystemExit(format_validation_error(error)) from None
