"""The records files of a run: where each pass writes, and reading them back (resume).

reports/<run-id>/records/<role>-<served name>__<prompt>__<body>.jsonl, one line per finished
request, appended at once so that an interrupted run loses nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from aria.files import atomic_write_jsonl
from aria.prompts import DIAGNOSTIC_BODIES
from aria.schema import FIELD_ORDER, FIELD_ORDERS
from evaluation.config import BenchmarkConfig, SetupError, Target
from evaluation.inputs import order_slug


def load_records(path: Path) -> list[dict]:
    """Records of an earlier (maybe killed) run; a truncated last line is dropped from the file."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    records: list[dict] = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except ValueError:
            if i == len(lines) - 1:  # killed mid-write: rewrite without the partial line
                atomic_write_jsonl(path, records)
                break
            raise SetupError(f"{path}:{i + 1}: not a JSON record; delete the run folder") from None
    if lines and not lines[-1].endswith("\n") and len(records) == len(lines):
        atomic_write_jsonl(path, records)
    return records


def target_bodies(cfg: BenchmarkConfig, t: Target) -> list[str]:
    """The bodies this target is asked, in DIAGNOSTIC_BODIES order (the seed's first)."""
    wanted = t.bodies or cfg.bodies
    return [b for b in DIAGNOSTIC_BODIES if b in wanted]


def records_path(
    records_dir: Path, t: Target, prompt: str, body: str, order: tuple[str, ...] | None = None
) -> Path:
    """Where the diagnostic records of one target, prompt and body go; a field-order pass
    (`order` given) has its own file, `...__project-<order slug>.jsonl`."""
    suffix = body if order is None else f"{body}-{order_slug(order)}"
    return records_dir / f"{t.slug}__{prompt}__{suffix}.jsonl"


def field_orders_of(cfg: BenchmarkConfig, t: Target) -> list[tuple[str, ...]]:
    """The field orders the target's field-order passes send: none without --field-orders or
    with orders=0; every order but the canonical one when its project pass already sends it."""
    if not cfg.field_orders or t.orders == 0:
        return []
    covered = "project" in target_bodies(cfg, t)
    return [o for o in FIELD_ORDERS if not (covered and o == FIELD_ORDER)]
