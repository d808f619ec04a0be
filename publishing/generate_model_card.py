"""Write the Hugging Face model card (README.md) into each trained stage folder.

    python -m publishing.generate_model_card                      # what `make model-card` runs (all stages)
    python -m publishing.generate_model_card --stage aria-ft-dpo  # one stage

Reads the latest benchmark (reports/latest/summary.json, optional), the profile's recipes
(training/recipes/<profile>/{sft,dpo}.yaml) and, for tiny, the base's parameter count
(data/models/tiny/base/aria_build.json), renders with `aria.cards.render_model_card` and writes
data/models/<profile>/<stage>/README.md atomically. Ends with one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from aria.cards import STAGE_RECIPES, STAGE_SUMMARIES, render_model_card
from aria.files import atomic_write_text
from aria.logs import setup_logging
from aria.settings import STAGE_TARGETS, Settings, get_settings
from aria.summary import RunSummary, SummaryError, read_summary

log = logging.getLogger(__name__)

RECIPES_ROOT = Path("training/recipes")


@dataclass
class CardConfig:
    """Which stage(s) to write a card for, and where the inputs live (None: the defaults)."""

    stage: str = "all"
    summary_path: Path | None = None  # default: <reports>/latest/summary.json
    recipes_dir: Path | None = None  # default: training/recipes/<profile>


def load_summary(path: Path) -> RunSummary | None:
    """The benchmark summary, or None when no benchmark has run yet; SystemExit names the fix."""
    if not path.exists():
        return None
    try:
        return read_summary(path)
    except SummaryError as error:
        raise SystemExit(str(error)) from None


def base_parameters(settings: Settings) -> int | None:
    """The tiny base's parameter count from its aria_build.json (`make tiny-model`), else None."""
    build = settings.model_dir("base") / "aria_build.json"
    if settings.aria_profile != "tiny" or not build.exists():
        return None
    count = json.loads(build.read_text(encoding="utf-8")).get("parameters")
    return count if isinstance(count, int) else None


def load_recipes(recipes_dir: Path) -> dict[str, dict[str, Any] | None]:
    """Every recipe a card may show (`sft`, `dpo`) as plain dicts; None for a missing file."""
    recipes: dict[str, dict[str, Any] | None] = {}
    for name in sorted({n for names in STAGE_RECIPES.values() for n in names}):
        path = recipes_dir / f"{name}.yaml"
        if not path.exists():
            recipes[name] = None
            continue
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if data is not None and not isinstance(data, dict):
            raise SystemExit(f"{path}: a recipe must be a YAML mapping of settings")
        recipes[name] = data or {}
    return recipes


def main(cfg: CardConfig, settings: Settings) -> dict:
    """Write the card of each requested stage that exists; prints and returns what was written
    and skipped."""
    stages = list(STAGE_SUMMARIES) if cfg.stage == "all" else [cfg.stage]
    present = [s for s in stages if settings.model_dir(s).is_dir()]
    if not present:
        wanted = stages[0] if cfg.stage != "all" else "aria-ft-sft"
        raise SystemExit(
            f"no trained model in {settings.model_dir(wanted)}: run `{STAGE_TARGETS[wanted]}` first"
            + (" (then `make train-dpo`)" if cfg.stage == "all" else "")
        )
    summary_path = cfg.summary_path or settings.aria_reports_dir / "latest" / "summary.json"
    summary = load_summary(summary_path)
    recipes = load_recipes(cfg.recipes_dir or RECIPES_ROOT / settings.aria_profile)
    written = []
    for stage in present:
        text = render_model_card(
            profile=settings.aria_profile,
            stage=stage,
            base_model=settings.base_model(),
            summary=summary,
            recipes=recipes,
            dataset_repo=settings.hf_dataset_repo,
            model_repo=settings.hf_model_repo if stage == "aria-ft-dpo" else None,
            served_name=settings.vllm_served_name,
            base_parameters=base_parameters(settings),
        )
        path = settings.model_dir(stage) / "README.md"
        atomic_write_text(path, text)
        written.append(str(path))
        log.info("✓ %s", path)
    skipped = [s for s in stages if s not in present]
    for stage in skipped:
        log.warning("%s: not trained yet, no card (run `%s`)", stage, STAGE_TARGETS[stage])
    if summary is None:
        log.warning("no benchmark yet: run `make benchmark` (%s is missing)", summary_path)
    needed = {n for stage in present for n in STAGE_RECIPES[stage]}
    missing = [f"{n}.yaml" for n, r in recipes.items() if r is None and n in needed]
    if missing:
        log.warning(
            "recipes not found for profile %s: %s", settings.aria_profile, ", ".join(missing)
        )
    result = {"written": written, "skipped": skipped, "benchmark": summary is not None}
    print(json.dumps(result, ensure_ascii=False))
    return result


def parse_args(argv: list[str] | None = None) -> CardConfig:
    """CLI flags into a CardConfig."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=[*STAGE_SUMMARIES, "all"], default="all")
    parser.add_argument("--summary", type=Path, default=None, help="benchmark summary.json")
    parser.add_argument("--recipes-dir", type=Path, default=None, help="folder of sft/dpo.yaml")
    args = parser.parse_args(argv)
    return CardConfig(stage=args.stage, summary_path=args.summary, recipes_dir=args.recipes_dir)


if __name__ == "__main__":
    setup_logging()
    settings = get_settings()
    main(parse_args(), settings)
