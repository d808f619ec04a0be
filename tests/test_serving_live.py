"""The live vLLM server on the tiny model: guided JSON always valid, both bodies, auth, errors.

One server for the whole session (tests/fixtures_serving.py `live_server`). It serves the random
tiny base unless ARIA_TEST_MODEL names a trained model folder, so the tests assert what holds for
any model: the seed's free-string `pathologie` may run a random model to max_tokens, and then the
answer is a cut prefix of JSON in the schema's key order. With ARIA_TEST_MODEL set they also
assert that the answer is complete and right (the rule's label), which only a trained model does:

    ARIA_TEST_MODEL=data/models/tiny/aria-ft-dpo .venv/bin/python -m pytest tests/test_serving_live.py
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from aria.client import AriaClient, InvalidDiagnosticError
from aria.domain import EXAMPLE_MEASUREMENTS, label
from aria.prompts import diagnostic_request, render_prompt, report_request
from aria.schema import (
    FIELD_ORDER,
    FIELD_ORDERS,
    SEED_DIAGNOSTIC_SCHEMA,
    Diagnostic,
    conforms_to_schema,
    diagnostic_json_schema,
    is_json_prefix,
    parse_diagnostic,
)
from evaluation.sdk_parse import SeedOrderDiagnostic
from evaluation.soak import soak_measurements
from serve.health import EXIT_DIAGNOSTIC_FAILED, EXIT_DOWN, EXIT_OK
from serve.process import free_port

pytestmark = pytest.mark.live
ROOT = Path(__file__).resolve().parents[1]
# A trained model is served: its answers must also be complete and right.
TRAINED = bool(os.environ.get("ARIA_TEST_MODEL"))
EXPECTED_LABEL = label(dict(EXAMPLE_MEASUREMENTS))[0]


def client_for(live, **kwargs) -> AriaClient:
    """A client of the session's server with no retries: every failure must show."""
    return AriaClient(
        base_url=live.base_url,
        api_key=live.api_key,
        model=live.served_name,
        max_retries=0,
        timeout=120,
        **kwargs,
    )


def post(
    live, body=None, *, content: bytes | None = None, key: str | None = "live"
) -> httpx.Response:
    """POST /v1/chat/completions with the session's key (key='live'), another key, or none."""
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {live.api_key if key == 'live' else key}"
    return httpx.post(
        f"{live.base_url}/chat/completions",
        json=body if content is None else None,
        content=content,
        headers=headers,
        timeout=120,
    )


def assert_still_serving(live) -> None:
    """The next good request after a bad one is answered with a valid diagnostic."""
    response = post(live, diagnostic_request(EXAMPLE_MEASUREMENTS, live.served_name))
    assert response.status_code == 200, response.text
    parse_diagnostic(response.json()["choices"][0]["message"]["content"])


def test_server_is_ready_and_start_time_measured(live_server):
    assert live_server.start_seconds > 0
    assert httpx.get(f"{live_server.root_url}/health", timeout=10).status_code == 200


def test_100_guided_diagnostics_parse_and_validate(live_server):
    runners = soak_measurements(100, seed=7)
    client = client_for(live_server)

    def diagnose(measurements: dict) -> Diagnostic | str:
        try:
            return client.diagnose(measurements)
        except InvalidDiagnosticError as error:
            return f"{error.finish_reason}: {error.raw_text!r}"

    results = [diagnose(p) for p in runners[:20]]  # one at a time
    with ThreadPoolExecutor(max_workers=8) as pool:  # then batched by the engine
        results += list(pool.map(diagnose, runners[20:]))
    invalid = [r for r in results if not isinstance(r, Diagnostic)]
    assert not invalid, f"{len(invalid)}/100 guided answers are not schema-valid: {invalid[:3]}"


def project_body(live) -> dict:
    """The project's diagnostic body (schema S, the seed's field order), written out by hand."""
    return {
        "model": live.served_name,
        "messages": [{"role": "user", "content": render_prompt(EXAMPLE_MEASUREMENTS)}],
        "temperature": 0.1,
        "max_tokens": 256,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "diagnostic", "schema": diagnostic_json_schema()},
        },
    }


def seed_body(live) -> dict:
    """The seed README's diagnostic body (DOMAIN.md), written out by hand."""
    return {
        "model": live.served_name,
        "messages": [{"role": "user", "content": render_prompt(EXAMPLE_MEASUREMENTS)}],
        "temperature": 0.1,
        "max_tokens": 256,
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "diagnostic",
                "schema": {
                    "type": "object",
                    "properties": {
                        "pathologie": {"type": "string"},
                        "confiance": {"enum": ["élevée", "modérée", "faible"]},
                        "justification": {"type": "string"},
                    },
                    "required": ["pathologie", "confiance", "justification"],
                },
            },
        },
    }


def docs_seed_curl_body() -> bytes:
    """The JSON of the seed-body curl in docs/serving.md, byte for byte."""
    text = (ROOT / "docs" / "serving.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- seed-body\b.*?-->\n(.*?)<!-- end seed-body -->", text, re.S)
    assert block, "docs/serving.md lost its seed-body markers"
    return block.group(1).split("<<'JSON'\n", 1)[1].split("\nJSON\n", 1)[0].encode("utf-8")


def assert_guided_answer(content: str | None, finish_reason: str, order: tuple[str, ...]) -> dict:
    """What holds for any model: a prefix of JSON in the schema's key order; complete (keys in
    order) when finish_reason is `stop`. Returns the parsed object ({} when cut)."""
    assert finish_reason in ("stop", "length"), finish_reason
    assert content and is_json_prefix(content, order), f"not JSON in the order {order}: {content!r}"
    if finish_reason == "length":
        assert not TRAINED, f"a trained model's answer was cut by max_tokens: {content!r}"
        return {}
    obj = json.loads(content)
    assert tuple(obj) == order
    return obj


def assert_seed_answer(content: str | None, finish_reason: str) -> None:
    """The seed body's answer: see assert_guided_answer; with a trained model, the right label."""
    obj = assert_guided_answer(content, finish_reason, FIELD_ORDER)
    if obj:
        assert conforms_to_schema(obj, SEED_DIAGNOSTIC_SCHEMA), obj
    if TRAINED:
        assert obj["pathologie"] == EXPECTED_LABEL, obj


def test_bodies_are_what_the_project_sends(live_server):
    name = live_server.served_name
    assert project_body(live_server) == diagnostic_request(EXAMPLE_MEASUREMENTS, name)
    assert seed_body(live_server) == diagnostic_request(EXAMPLE_MEASUREMENTS, name, body="seed")
    assert json.loads(docs_seed_curl_body()) == seed_body(live_server)


def test_project_body_with_the_plain_openai_client(live_server):
    client = openai.OpenAI(base_url=live_server.base_url, api_key=live_server.api_key)
    completion = client.chat.completions.create(**project_body(live_server))
    parse_diagnostic(completion.choices[0].message.content)


def test_project_body_with_raw_http(live_server):
    response = post(live_server, project_body(live_server))
    assert response.status_code == 200, response.text
    parse_diagnostic(response.json()["choices"][0]["message"]["content"])


def test_seed_body_sent_verbatim_as_the_docs_curl_shows_it(live_server):
    # The literal bytes of the docs' curl (model "aria-ft" is the session's served name).
    response = post(live_server, content=docs_seed_curl_body())
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert_seed_answer(choice["message"]["content"], choice["finish_reason"])


def test_seed_body_with_the_plain_openai_client(live_server):
    client = openai.OpenAI(base_url=live_server.base_url, api_key=live_server.api_key)
    completion = client.chat.completions.create(**seed_body(live_server))
    choice = completion.choices[0]
    assert_seed_answer(choice.message.content, choice.finish_reason)


def test_openai_parse_with_a_pydantic_model_in_the_seed_order(live_server):
    client = openai.OpenAI(
        base_url=live_server.base_url, api_key=live_server.api_key, max_retries=0
    )
    try:
        completion = client.chat.completions.parse(
            model=live_server.served_name,
            messages=[{"role": "user", "content": render_prompt(EXAMPLE_MEASUREMENTS)}],
            temperature=0.1,
            max_tokens=256,
            response_format=SeedOrderDiagnostic,
        )
    except openai.LengthFinishReasonError:
        # What the SDK raises when max_tokens cut the answer: a random model may get there.
        assert not TRAINED, "a trained model's answer was cut by max_tokens"
        return
    message = completion.choices[0].message
    assert isinstance(message.parsed, SeedOrderDiagnostic)
    assert tuple(json.loads(message.content)) == FIELD_ORDER
    if TRAINED:
        assert message.parsed.pathologie == EXPECTED_LABEL


def test_sdk_parse_script_counts_right_answers_and_exceptions(live_server, tmp_path):
    # `python -m evaluation.sdk_parse`: the `.parse` call above over an eval file, as measured.
    runners = [dict(EXAMPLE_MEASUREMENTS), *soak_measurements(2, seed=5)]
    eval_path = tmp_path / "eval.jsonl"
    eval_path.write_text(
        "".join(json.dumps({"id": f"r{i}", "profile": m}) + "\n" for i, m in enumerate(runners))
    )
    out = tmp_path / "sdk.json"
    result = subprocess.run(
        [
            sys.executable, "-m", "evaluation.sdk_parse", "--base-url", live_server.base_url,
            "--model", live_server.served_name, "--eval", str(eval_path), "--limit", "2",
            "--out", str(out), "--timeout", "120",
        ],
        cwd=ROOT,
        env={**os.environ, "VLLM_API_KEY": live_server.api_key},
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(out.read_text())
    assert summary == json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["n"] == 2 and list(summary["per_set"]) == ["eval"]
    # Every runner is either parsed or counted under its exception's name.
    assert summary["exception_rate"] * 2 == sum(summary["exceptions"].values())
    assert set(summary["exceptions"]) <= {"LengthFinishReasonError", "ValidationError"}
    if TRAINED:
        assert summary["exceptions"] == {} and summary["exact_match"] > 0


@pytest.mark.parametrize("order", FIELD_ORDERS, ids=["-".join(o) for o in FIELD_ORDERS])
def test_project_body_in_every_field_order_answers_in_that_order(live_server, order):
    body = diagnostic_request(EXAMPLE_MEASUREMENTS, live_server.served_name, order=order)
    response = post(live_server, body)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    # Schema S bounds the answer under max_tokens: complete whatever the model.
    assert choice["finish_reason"] == "stop", choice
    obj = assert_guided_answer(choice["message"]["content"], "stop", tuple(order))
    diagnostic = parse_diagnostic(choice["message"]["content"])
    assert diagnostic.model_dump() == {k: obj[k] for k in FIELD_ORDER}
    if TRAINED:
        assert diagnostic.pathologie == EXPECTED_LABEL


def test_report_returns_text(live_server):
    # The session serves an untrained model: its text may be whitespace, but it must be text.
    text = client_for(live_server).report(EXAMPLE_MEASUREMENTS)
    assert isinstance(text, str) and len(text) > 0
    response = post(live_server, report_request(EXAMPLE_MEASUREMENTS, live_server.served_name))
    assert response.status_code == 200
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] in ("stop", "length")
    assert response.json()["usage"]["completion_tokens"] >= 1


@pytest.mark.parametrize("key", [None, "wrong-key"], ids=["missing", "wrong"])
def test_api_key_is_required(live_server, key):
    response = post(
        live_server, diagnostic_request(EXAMPLE_MEASUREMENTS, live_server.served_name), key=key
    )
    assert response.status_code == 401


def test_wrong_key_through_the_openai_client(live_server):
    client = openai.OpenAI(base_url=live_server.base_url, api_key="wrong-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(**seed_body(live_server))


def bad_request(live, case: str) -> tuple[dict | None, bytes | None]:
    """(json body, raw bytes) of one malformed request."""
    good = diagnostic_request(EXAMPLE_MEASUREMENTS, live.served_name)
    if case == "invalid_schema":
        schema = {"type": "objectx"}
        fmt = {"type": "json_schema", "json_schema": {"name": "bad", "schema": schema}}
        return {**good, "response_format": fmt}, None
    if case == "unknown_model":
        return {**good, "model": "no-such-model"}, None
    if case == "prompt_too_long":
        # Digits are split one token each: far more tokens than max_model_len.
        long_text = " ".join(str(i) for i in range(2 * live.max_model_len))
        return {**good, "messages": [{"role": "user", "content": long_text}]}, None
    if case == "negative_max_tokens":
        return {**good, "max_tokens": -1}, None
    if case == "malformed_json":
        return None, b'{"model": "aria-ft", "messages": [{"role": "user", '
    raise ValueError(case)


@pytest.mark.parametrize(
    ("case", "status", "words"),
    [
        ("invalid_schema", 400, "schema"),
        ("unknown_model", 404, "does not exist"),
        ("prompt_too_long", 400, "maximum context length"),
        ("negative_max_tokens", 400, "max_tokens"),
        ("malformed_json", 400, "JSON"),
    ],
)
def test_bad_requests_get_a_readable_4xx_and_the_server_keeps_serving(
    live_server, case, status, words
):
    body, content = bad_request(live_server, case)
    response = post(live_server, body, content=content)
    assert response.status_code == status, response.text
    message = response.json()["error"]["message"]
    assert words in message
    assert_still_serving(live_server)


def run_health(live, **env) -> subprocess.CompletedProcess:
    """`python -m serve.health` pointed at the session's server (env overrides on top)."""
    base = {
        "VLLM_HOST": "127.0.0.1",
        "VLLM_PORT": str(live.port),
        "VLLM_API_KEY": live.api_key,
        "VLLM_SERVED_NAME": live.served_name,
    }
    return subprocess.run(
        [sys.executable, "-m", "serve.health", "--timeout-s", "120"],
        cwd=ROOT,
        env={**os.environ, **base, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_health_cli_passes(live_server):
    result = run_health(live_server)
    assert result.returncode == EXIT_OK, result.stdout + result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["ok"] is True


def test_health_cli_on_a_dead_port(live_server):
    result = run_health(live_server, VLLM_PORT=str(free_port()))
    assert result.returncode == EXIT_DOWN
    assert "make serve-ft" in result.stdout


def test_health_cli_with_a_wrong_key(live_server):
    result = run_health(live_server, VLLM_API_KEY="wrong-key")
    assert result.returncode == EXIT_DIAGNOSTIC_FAILED
    assert "VLLM_API_KEY" in result.stdout


def test_a_named_tool_choice_is_answered_with_guided_json(live_server):
    """instructor's default mode and LangChain's function_calling: tools + a named tool_choice."""
    client = openai.OpenAI(
        base_url=live_server.base_url, api_key=live_server.api_key, max_retries=0
    )
    tool = {
        "type": "function",
        "function": {"name": "Diagnostic", "parameters": SeedOrderDiagnostic.model_json_schema()},
    }
    completion = client.chat.completions.create(
        model=live_server.served_name,
        messages=[{"role": "user", "content": render_prompt(EXAMPLE_MEASUREMENTS)}],
        temperature=0.1,
        max_tokens=256,
        tools=[tool],
        tool_choice={"type": "function", "function": {"name": "Diagnostic"}},
    )
    choice = completion.choices[0]
    if choice.finish_reason == "length":
        assert not TRAINED, "a trained model's answer was cut by max_tokens"
        return
    (call,) = choice.message.tool_calls
    assert call.function.name == "Diagnostic"
    parsed = SeedOrderDiagnostic.model_validate_json(call.function.arguments)
    assert tuple(json.loads(call.function.arguments)) == FIELD_ORDER
    if TRAINED:
        assert parsed.pathologie == EXPECTED_LABEL


def test_no_process_argv_holds_the_api_key(live_server):
    """/proc/PID/cmdline is world-readable: the key travels in the server's environment."""
    import psutil

    tree = psutil.Process(live_server.pid)
    processes = [tree, *tree.children(recursive=True)]
    assert len(processes) >= 2  # the API server and its EngineCore
    for process in psutil.process_iter(["cmdline"]):
        argv = " ".join(process.info["cmdline"] or [])
        assert live_server.api_key not in argv, f"pid {process.pid} shows the API key in its argv"
