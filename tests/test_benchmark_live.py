"""The benchmark end to end against the session's live vLLM server on the tiny model.

Each test runs `python -m scripts.benchmark` in a subprocess, as `make benchmark` does, on a small
sample of the eval sets (eval.jsonl and outside.jsonl of the session's datasets), with both
diagnostic bodies, writing into tmp_path. The session's server serves the random tiny base unless
ARIA_TEST_MODEL names a trained model: the checks hold for any model (the seed's free string may
run a random model to max_tokens); quality is asserted only with ARIA_TEST_MODEL.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.live


def _bench_env(live_server) -> dict[str, str]:
    env = os.environ | {"VLLM_API_KEY": live_server.api_key, "HF_HUB_OFFLINE": "1"}
    env.pop("ARIA_REPORTS_DIR", None)
    return env


def _bench_args(live_server, dataset_dir: Path, reports: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "scripts.benchmark",
        "--target",
        f"dpo={live_server.base_url},{live_server.served_name}",
        "--eval",
        str(dataset_dir / "eval" / "eval.jsonl"),
        "--reports-dir",
        str(reports),
        *extra,
    ]


def _run(live_server, dataset_dir, reports, *extra, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(
        _bench_args(live_server, dataset_dir, reports, *extra),
        cwd=ROOT,
        env=_bench_env(live_server),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _gate(
    tmp_path: Path, name: str, thresholds: list[dict], bodies: list[str] | None = None
) -> Path:
    """A gate config file; by default on both bodies, as the release gate."""
    path = tmp_path / f"{name}.yaml"
    doc = {"thresholds": thresholds} | ({"bodies": bodies} if bodies else {})
    path.write_text(json.dumps(doc))  # JSON is valid YAML
    return path


@pytest.fixture(scope="module")
def lenient_run(live_server, dataset_dir, tmp_path_factory):
    """One small run with a gate any model passes, shared by the schema and output checks."""
    tmp = tmp_path_factory.mktemp("bench")
    gate = _gate(tmp, "lenient", [{"metric": "exact_match", "op": ">=", "target": 0.0}])
    reports = tmp / "reports"
    proc = _run(
        live_server,
        dataset_dir,
        reports,
        "--limit", "4", "--warmup", "1", "--report-sample", "1", "--concurrency", "2",
        "--gate-config", str(gate), "--run-id", "lenient",
    )  # fmt: skip
    return proc, reports


def test_run_writes_summary_report_plots_and_json_last_line(lenient_run):
    proc, reports = lenient_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["run_id"] == "lenient"
    assert last["gate"]["passed"] is True
    # The session's server wrote its pid file (start_server), so the gate measured its memory.
    assert 0 < last["gate"]["serving_memory_gb"] < 10

    run_dir = reports / "lenient"
    assert (reports / "latest").resolve() == run_dir.resolve()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["schema_version"] == 2
    assert summary["eval"]["n_per_set"] == {"eval": 4, "outside": 4}
    model = summary["models"][0]
    assert model["role"] == "dpo" and model["primary_body"] == "seed"
    assert set(model["bodies"]) == {"seed", "project"}
    for body in model["bodies"].values():
        assert body["n"] == 8 and set(body["per_set"]) == {"eval", "outside"}
        for key in ("exact_match", "json_valid_rate", "cut_by_length_rate", "confusion"):
            assert key in body
        # The whole answer: per band of the rule, and the confusion of confidences.
        assert set(body["per_confidence"]) == {"élevée", "modérée", "faible"}
        assert sum(map(sum, body["confidence_confusion"]["matrix"])) == body["n"]
        assert body["whole_answer_rate"] <= body["exact_match"]
        assert set(body["latency_ms"]) >= {"p50", "p95", "p99"}
        # The server answered: transport failures would mean the benchmark or the server is broken.
        transport = {k: n for k, n in body["errors"].items() if k != "unparsable"}
        assert not transport, body["failed_ids"]
    project, seed = model["bodies"]["project"], model["bodies"]["seed"]
    # Schema S fits in max_tokens whatever the model; the seed's free string may not, and an
    # answer that is not JSON is exactly one cut by max_tokens.
    assert project["json_valid_rate"] == 1.0 and project["cut_by_length_rate"] == 0.0
    assert project["key_order_rate"] == 1.0
    assert seed["json_valid_rate"] + seed["cut_by_length_rate"] == pytest.approx(1.0)
    if os.environ.get("ARIA_TEST_MODEL"):
        assert seed["json_valid_rate"] == 1.0 and seed["exact_match"] >= 0.5
    assert model["cold_ms"] is not None and len(model["warmup_ms"]) == 1
    assert model["report"]["n"] == 1 and "passed_rate" in model["report"]
    assert summary["gate"]["passed"] is True and summary["gate"]["failures"] == []
    assert summary["gate"]["by_body"] == {"seed": True, "project": True}
    assert set(last["models"][0]["bodies"]) == {"seed", "project"}
    for plot in ("latency.png", "per_pathology.png", "comparison.png", "confusion_dpo-"):
        assert any(p.name.startswith(plot) and p.stat().st_size > 0 for p in run_dir.glob("*.png"))
    report = (run_dir / "report.md").read_text()
    assert "## Release gate" in report and "| seed |" in report and "| project |" in report
    assert "Whole answer (pathology and confidence right)" in report
    assert "| rule's confiance | n | answered that band | whole answer right |" in report

    for body in ("seed", "project"):
        path = next(run_dir.glob(f"records/*__default__{body}.jsonl"))
        records = [json.loads(x) for x in path.open()]
        assert len({r["id"] for r in records}) == 8
        assert {r["set"] for r in records} == {"eval", "outside"}
        assert all(r["body"] == body and r["finish_reason"] in ("stop", "length") for r in records)
        assert all({"input", "raw", "scores", "latency", "prompt"} <= set(r) for r in records)


def test_impossible_gate_exits_nonzero_naming_the_metric(live_server, dataset_dir, tmp_path):
    gate = _gate(tmp_path, "impossible", [{"metric": "exact_match", "op": ">", "target": 1.0}])
    proc = _run(
        live_server,
        dataset_dir,
        tmp_path / "reports",
        "--limit", "3", "--warmup", "0", "--report-sample", "0", "--no-plots", "--no-outside",
        "--gate-config", str(gate),
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "exact_match" in proc.stderr and "misses > 1" in proc.stderr
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["gate"]["passed"] is False
    assert any("exact_match" in f for f in last["gate"]["failures"])


def test_resume_after_kill_loses_and_repeats_nothing(live_server, dataset_dir, tmp_path):
    reports = tmp_path / "reports"
    # One body is enough to test resuming; the gate must then not require the other.
    lenient = [{"metric": "exact_match", "op": ">=", "target": 0.0}]
    gate = _gate(tmp_path, "lenient", lenient, bodies=["project"])
    extra = ["--limit", "40", "--warmup", "0", "--report-sample", "0", "--no-plots"]
    extra += ["--gate-config", str(gate), "--no-outside", "--bodies", "project"]
    records = reports / "killed" / "records"
    proc = subprocess.Popen(
        _bench_args(live_server, dataset_dir, reports, *extra, "--run-id", "killed"),
        cwd=ROOT,
        env=_bench_env(live_server),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    path = None
    while time.monotonic() < deadline and proc.poll() is None:
        path = next(records.glob("*__default__project.jsonl"), None) if records.exists() else None
        if path and len(path.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL, "the run ended before it could be killed"
    assert path is not None, "the run wrote no record before being killed"
    before = len(path.read_text().splitlines())

    done = _run(live_server, dataset_dir, reports, *extra, "--resume", "killed")
    assert done.returncode == 0, done.stderr[-2000:]
    ids = [json.loads(line)["id"] for line in path.read_text().splitlines()]
    wanted = json.loads((reports / "killed" / "run.json").read_text())["item_ids"]
    assert len(ids) == len(set(ids)), "a record was repeated"
    assert set(ids) == set(wanted) and len(wanted) == 40
    assert before <= len(ids)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dead_endpoint_stops_early_with_a_clear_message(dataset_dir, tmp_path):
    proc = subprocess.run(
        [
            sys.executable, "-m", "scripts.benchmark",
            "--target", f"dpo=http://127.0.0.1:{_free_port()}/v1,aria-ft-dpo",
            "--eval", str(dataset_dir / "eval" / "eval.jsonl"),
            "--reports-dir", str(tmp_path / "reports"),
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "is down" in proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["gate"]["passed"] is None
    assert not (tmp_path / "reports").exists()


def test_unknown_served_name_stops_early(live_server, dataset_dir, tmp_path):
    proc = subprocess.run(
        [
            sys.executable, "-m", "scripts.benchmark",
            "--target", f"dpo={live_server.base_url},no-such-model",
            "--eval", str(dataset_dir / "eval" / "eval.jsonl"),
            "--reports-dir", str(tmp_path / "reports"),
        ],
        cwd=ROOT, env=_bench_env(live_server), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "does not serve 'no-such-model'" in proc.stderr
    assert live_server.served_name in proc.stderr
