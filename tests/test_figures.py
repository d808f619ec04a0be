"""scripts/figures.py: the README's table of current figures is rendered from dicts, never typed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from aria.settings import Settings
from scripts import figures as fig

SETTINGS = Settings(_env_file=None)  # every test names its reports folder

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "summary_v2.json"
STAGES = {"datasets": 4.4, "tiny-model": 0.3, "train-sft": 511.2, "serve": 203.9}


def summary() -> dict:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def stages_of(run_id: str) -> dict:
    return fig.stage_times_record(
        STAGES,
        command="make demo",
        machine="2 cores, AMD EPYC, AVX-512",
        finished_at="2026-11-30T15:31:00+00:00",
        run_id=run_id,
    )


def test_figures_of_the_fixture_summary() -> None:
    figures = fig.figures_from_summary(summary())
    assert figures["date"] == "2026-11-30" and figures["profile"] == "tiny"
    assert figures["command"] == "make benchmark" and figures["stages"] is None
    dpo = next(m for m in figures["models"] if m["role"] == "dpo")
    seed = dpo["bodies"]["seed"]
    assert seed["per_set"] == {
        "eval": {"n": 150, "exact_match": 0.88},
        "outside": {"n": 150, "exact_match": 0.7333},
    }
    assert seed["latency_p50_ms"] == 352.93 and seed["grounded_rate"] == 0.1367
    assert dpo["report"]["passed_rate"] == 0.075
    assert dpo["field_orders"]["n"] == 60 and dpo["field_orders"]["key_order_rate_min"] == 1.0
    assert figures["gate"]["passed"] is False
    assert {f["body"] for f in figures["gate"]["failures"]} == {"seed", "project"}


def test_the_table_of_the_fixture_with_stage_times() -> None:
    data = summary()
    block = fig.render_table(fig.figures_from_summary(data, stages_of(data["run_id"])))
    first, _, table = block.partition("\n\n")
    assert (
        "2026-11-30" in first and "2 cores, AMD EPYC, AVX-512" in first and "`make demo`" in first
    )
    rows = dict(line.strip("|").split(" | ", 1) for line in table.splitlines()[2:])
    rows = {label.strip(): value.strip() for label, value in rows.items()}
    stages = rows["`make demo`, time of each stage"]
    assert stages.startswith("datasets 4.4 s, tiny-model 0.3 s, train-sft 8 min 31 s")
    assert stages.endswith(
        "serve 3 min 24 s; 12 min 0 s in all (train-dpo not run: their outputs were there)"
    )
    assert rows["DPO: exact match, `eval.jsonl` (150)"] == "88.0 % / 88.0 %"
    assert rows["DPO: exact match, `outside.jsonl` (150)"] == "73.3 % / 76.0 %"
    assert rows["DPO: latency P50 · P99"].startswith("353 · 501 ms / ")
    assert rows["base: cut by max_tokens"].startswith("100 % / ")
    gate = rows["release gate on `aria-ft-dpo` (tiny thresholds)"]
    assert gate.startswith("missed: justification_grounded_rate on the seed's body: 13.7 %")
    assert "(target ≥ 90.0 %)" in gate


def test_rows_without_a_figure_are_left_out() -> None:
    figures = fig.figures_from_summary(summary())
    for model in figures["models"]:
        for body in model["bodies"].values():
            body["crossings_right_rate"] = None
    assert "alert signals" not in fig.render_table(figures)


@pytest.mark.parametrize(
    ("value", "shown"), [(1.0, "100 %"), (0.0, "0 %"), (0.975, "97.5 %"), (0.15, "15.0 %")]
)
def test_percent(value: float, shown: str) -> None:
    assert fig.percent(value) == shown
    assert fig.percent(None) == "–"


def test_duration() -> None:
    assert fig.duration(4.44) == "4.4 s"
    assert fig.duration(1229.4) == "20 min 29 s"


@pytest.mark.parametrize(
    ("flags", "vector"), [("fpu avx2 avx512f", "AVX-512"), ("fpu avx2", "AVX2"), ("fpu", "no AVX2")]
)
def test_cpu_description(flags: str, vector: str) -> None:
    cpuinfo = f"processor\t: 0\nmodel name\t: AMD EPYC  7B13\nflags\t\t: {flags}\n" * 2
    assert fig.cpu_description(cpuinfo, 2) == f"2 cores, AMD EPYC 7B13, {vector}"


def test_replace_table_keeps_the_rest_and_refuses_a_readme_without_markers() -> None:
    readme = f"# Title\n\n{fig.START}\nold table\n{fig.END}\n\nafter\n"
    updated = fig.replace_table(readme, "new table\n")
    assert updated == f"# Title\n\n{fig.START}\nnew table\n{fig.END}\n\nafter\n"
    assert fig.table_in(updated) == "new table\n"
    with pytest.raises(fig.FiguresError, match="markers"):
        fig.replace_table("# no markers\n", "x")


def test_the_readme_table_is_docs_figures_json_rendered() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.count(fig.START) == 1 and readme.count(fig.END) == 1
    committed = json.loads((ROOT / "docs" / "figures.json").read_text(encoding="utf-8"))
    assert fig.table_in(readme) == fig.render_table(committed), "run `make figures`"


def test_docs_figures_json_has_the_shape_make_figures_writes() -> None:
    written = fig.figures_from_summary(summary(), stages_of(summary()["run_id"]))
    committed = json.loads((ROOT / "docs" / "figures.json").read_text(encoding="utf-8"))
    assert committed.keys() == written.keys()
    assert committed["figures_version"] == fig.FIGURES_VERSION
    for model in committed["models"]:
        assert model.keys() == written["models"][0].keys()
        for body in model["bodies"].values():
            assert body.keys() == written["models"][0]["bodies"]["seed"].keys()


def test_main_gathers_the_latest_run_then_renders_the_readme(tmp_path: Path, capsys) -> None:
    run = tmp_path / "reports" / "20261130-152205"
    run.mkdir(parents=True)
    shutil.copy(FIXTURE, run / "summary.json")
    (tmp_path / "reports" / "latest").symlink_to(run.name)
    (run / fig.DEMO_STAGES_FILE).write_text(json.dumps(stages_of(summary()["run_id"])))
    readme = tmp_path / "README.md"
    readme.write_text(f"# ARIA\n{fig.START}\n{fig.END}\nrest\n", encoding="utf-8")
    cfg = fig.FiguresConfig(tmp_path / "reports", tmp_path / "figures.json", readme)

    assert fig.main(cfg, SETTINGS) == 0
    written = json.loads(cfg.figures_path.read_text(encoding="utf-8"))
    assert written["stages"] == STAGES and written["machine"] == "2 cores, AMD EPYC, AVX-512"
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("# ARIA\n") and text.endswith(f"{fig.END}\nrest\n")
    assert fig.table_in(text) == fig.render_table(written)
    check = fig.FiguresConfig(cfg.reports_dir, cfg.figures_path, readme, check=True)
    assert fig.main(check, SETTINGS) == 0

    readme.write_text(text.replace("88.0 %", "99.0 %"), encoding="utf-8")
    assert fig.main(check, SETTINGS) == 1


def test_stage_times_of_another_run_are_left_out(tmp_path: Path) -> None:
    latest = tmp_path / "reports" / "latest"
    latest.mkdir(parents=True)
    shutil.copy(FIXTURE, latest / "summary.json")
    (latest / fig.DEMO_STAGES_FILE).write_text(json.dumps(stages_of("20250101-000000")))
    readme = tmp_path / "README.md"
    readme.write_text(f"{fig.START}\n{fig.END}\n", encoding="utf-8")
    fig.main(fig.FiguresConfig(tmp_path / "reports", tmp_path / "figures.json", readme), SETTINGS)
    written = json.loads((tmp_path / "figures.json").read_text(encoding="utf-8"))
    assert written["stages"] is None and written["command"] == "make benchmark"


def test_without_a_benchmark_nor_docs_figures_json_it_names_make_demo(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"{fig.START}\n{fig.END}\n", encoding="utf-8")
    cfg = fig.FiguresConfig(tmp_path / "reports", tmp_path / "figures.json", readme)
    with pytest.raises(fig.FiguresError, match="make demo"):
        fig.main(cfg, SETTINGS)
