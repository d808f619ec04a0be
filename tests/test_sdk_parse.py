"""evaluation.sdk_parse without a server: its tally, and the errors that name the fix (the live
run against the session's server is in test_serving_live.py, a refused key in test_serving.py)."""

from __future__ import annotations

import json

from aria.domain import EXAMPLE_MEASUREMENTS
from aria.settings import get_settings
from evaluation import sdk_parse
from evaluation.inputs import EvalItem
from serve.process import free_port


def item(set_name: str) -> EvalItem:
    return EvalItem(
        "x", dict(EXAMPLE_MEASUREMENTS), "Tendinite Achille", "élevée", [], set=set_name
    )


def test_summarise_counts_right_answers_and_exceptions_per_set():
    results = [
        (item("eval"), True, None),
        (item("eval"), False, "LengthFinishReasonError"),
        (item("outside"), False, None),
        (item("outside"), True, None),
    ]
    summary = sdk_parse.summarise(results)
    assert summary["n"] == 4 and summary["exact_match"] == 0.5
    assert summary["exception_rate"] == 0.25
    assert summary["exceptions"] == {"LengthFinishReasonError": 1}
    assert summary["per_set"] == {
        "eval": {"n": 2, "exact_match": 0.5, "exception_rate": 0.5},
        "outside": {"n": 2, "exact_match": 0.5, "exception_rate": 0.0},
    }


def run(argv: list[str]) -> int:
    """`python -m evaluation.sdk_parse ARGV` in this process (its entry point's two calls)."""
    settings = get_settings()
    return sdk_parse.main(sdk_parse.parse_args(argv, settings=settings), settings)


def test_the_flags_fill_the_config_over_the_settings(tmp_path):
    settings = get_settings()
    cfg = sdk_parse.parse_args(
        ["--eval", str(tmp_path / "e.jsonl"), "--limit", "3"], settings=settings
    )
    assert cfg.base_url == settings.base_url and cfg.model == settings.vllm_served_name
    assert cfg.eval_path == tmp_path / "e.jsonl" and cfg.limit == 3 and cfg.timeout_s == 60.0


def test_a_missing_eval_set_names_make_datasets(tmp_path, capsys, caplog):
    assert run(["--eval", str(tmp_path / "eval.jsonl")]) == 2
    assert "make datasets" in caplog.text  # logged at ERROR (stderr under setup_logging)
    assert capsys.readouterr().out == ""  # no result was measured: nothing on stdout


def test_no_server_names_the_url_and_the_fix(tmp_path, capsys, caplog):
    eval_path = tmp_path / "eval.jsonl"
    eval_path.write_text(json.dumps({"id": "r0", "profile": dict(EXAMPLE_MEASUREMENTS)}) + "\n")
    url = f"http://127.0.0.1:{free_port()}/v1"
    assert run(["--eval", str(eval_path), "--base-url", url, "--timeout", "5"]) == 2
    errors = " ".join(r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    assert url in errors and "make serve-ft-bg" in errors
    assert capsys.readouterr().out == ""
