"""The docs restate facts the code holds: these tests fail when the two drift apart."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from aria.domain import EXAMPLE_MEASUREMENTS, RULES
from aria.prompts import diagnostic_request
from aria.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def marked_block(page: str, marker: str) -> str:
    """The text between `<!-- marker... -->` and `<!-- end marker -->` of a docs page."""
    text = (DOCS / page).read_text(encoding="utf-8")
    match = re.search(rf"<!-- {marker}\b.*?-->\n(.*?)<!-- end {marker} -->", text, re.S)
    assert match, f"docs/{page} lost its `{marker}` markers"
    return match.group(1)


def test_domain_thresholds_table_matches_the_rules() -> None:
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in marked_block("domain.md", "thresholds-table").splitlines()[2:]
        if line.startswith("|")
    ]
    expected = [
        [rule.pathology, " and ".join(f"`{key}` > {t:g}" for key, t in rule.thresholds)]
        for rule in RULES
    ]
    assert rows == expected


def test_serving_settings_table_lists_every_setting() -> None:
    table = marked_block("serving.md", "settings-table")
    listed = set(re.findall(r"^\| `([A-Z_]+)` \|", table, re.M))
    assert listed == {name.upper() for name in Settings.model_fields}


def test_serving_curl_body_is_the_real_diagnostic_request() -> None:
    block = marked_block("serving.md", "diagnostic-body")
    body = block.split("<<'JSON'\n", 1)[1].split("\nJSON\n", 1)[0]
    assert json.loads(body) == diagnostic_request(EXAMPLE_MEASUREMENTS, "aria-ft")


def test_serving_seed_curl_body_is_the_seed_request_verbatim() -> None:
    block = marked_block("serving.md", "seed-body")
    body = block.split("<<'JSON'\n", 1)[1].split("\nJSON\n", 1)[0]
    assert json.loads(body) == diagnostic_request(EXAMPLE_MEASUREMENTS, "aria-ft", body="seed")


def test_every_docs_page_is_in_the_nav() -> None:
    # mkdocs.yml uses a !!python/name tag (mermaid fences): read the nav with a lenient loader.
    class Lenient(yaml.SafeLoader):
        pass

    Lenient.add_multi_constructor("tag:yaml.org,2002:python/", lambda *_: None)
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Lenient)

    def pages(nav) -> set[str]:
        if isinstance(nav, str):
            return {nav}
        items = nav.values() if isinstance(nav, dict) else nav
        return set().union(*(pages(item) for item in items))

    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages(config["nav"]) == on_disk


def test_ci_workflow_runs_quality_and_the_full_suite() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    # YAML reads the bare key `on` as True.
    triggers = workflow.get("on", workflow.get(True))
    assert triggers["push"]["branches"] == ["main"]
    assert triggers["pull_request"]["branches"] == ["main"]
    steps = {
        name: " ".join(str(s.get("run", "")) for s in job["steps"])
        for name, job in workflow["jobs"].items()
    }
    for command in ("ruff check .", "ruff format --check .", "pip-audit", "make test-fast"):
        assert command in steps["quality"]
    assert "bash .ci/run" in steps["full"]
    assert all("timeout-minutes" in job for job in workflow["jobs"].values())


def test_readme_lists_every_make_target() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-zA-Z_-]+):.*## ", makefile, re.M))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- make-targets\b.*?-->\n(.*?)<!-- end make-targets -->", readme, re.S)
    assert block, "README.md lost its make-targets markers"
    # A row may group related targets in its first cell: `make serve` / `make serve-sft` / ...
    first_cells = [
        line.split("|")[1] for line in block.group(1).splitlines() if line.startswith("|")
    ]
    assert set(re.findall(r"`make ([a-zA-Z_-]+)`", " ".join(first_cells))) == targets


def test_layout_sections_list_every_package_and_only_folders_that_exist() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Layout\n\n```text\n(.*?)```", readme, re.S)
    assert block, "README.md lost its Layout section (a ```text block under ## Layout)"
    readme_rows = dict(re.findall(r"^(\w+)/ +(.*)$", block.group(1), re.M))
    table = (DOCS / "architecture.md").read_text(encoding="utf-8").split("## Where the code lives")
    assert len(table) == 2, "docs/architecture.md lost its `## Where the code lives` table"
    architecture = set(re.findall(r"^\| `(\w+)/` \|", table[1], re.M))
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages <= set(readme_rows), "README.md's layout misses a package"
    assert packages <= architecture, "docs/architecture.md's table misses a package"
    # Generated folders (data/, reports/) may be absent from a fresh checkout.
    listed = {n for n, what in readme_rows.items() if not what.startswith("generated")}
    assert {n for n in listed | architecture if not (ROOT / n).is_dir()} == set()


# Phrases that tell the order in which the work was done: the history lives in docs/experiments.md,
# the one dated log; every other page says what is, as reference or how-to (STYLE.md rule 17).
ORDINALS = (
    "first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|next|previous|last|this"
)
NARRATION = re.compile(
    rf"\b(?:{ORDINALS}|earlier|later|same|one|that|another) sessions?\b"
    r"|\b(?:since|until|as of|up to) \d{4}-\d{2}-\d{2}"
    r"|\b(?:earlier|previous|former|older|old) (?:recipes?|prompts?|wordings?|tokenizers?|versions?"
    r"|designs?|answers?|models?|runs?|bases?)\b"
    r"|\bshipped (?:then|until|from|since|now|before)\b"
    r"|\b(?:now|previously|no longer|any ?more|today|so far|until now|at first|used to"
    r"|the day before|was reverted|were reverted)\b",
    re.IGNORECASE,
)


def test_no_page_narrates_the_order_of_work() -> None:
    pages = [ROOT / "README.md"]
    pages += [p for p in sorted(DOCS.rglob("*.md")) if p.name != "experiments.md"]
    found = [
        f"{page.relative_to(ROOT)}:{number}: {match.group(0)!r}"
        for page in pages
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
        for match in NARRATION.finditer(line)
    ]
    assert not found, (
        "narration of the order of work (move it to docs/experiments.md):\n" + "\n".join(found)
    )


def test_the_narration_check_catches_ordinal_phrases() -> None:
    caught = [
        "the seventh session's recipe",
        "Since 2026-12-02 the prompt ranks",
        "an earlier recipe scored",
        "the tokenizer now leaves it out",
        "as previously measured",
        "it no longer answers",
    ]
    assert all(NARRATION.search(text) for text in caught)
    assert not NARRATION.search("A motion-capture session of a runner yields seven numbers.")
