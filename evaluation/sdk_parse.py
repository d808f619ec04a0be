"""The openai SDK's `.parse` path against a served model: a client's own pydantic model, its fields
in the seed's order (`pathologie` a free string), over the eval sets (issue 18).

    make serve-ft-bg && python -m evaluation.sdk_parse --limit 150   # VLLM_HOST/PORT/SERVED_NAME

This is the call a downstream service writes with the SDK, not the benchmark's hand-built bodies:
`client.chat.completions.parse(..., response_format=SeedOrderDiagnostic)` turns the model into a
strict json_schema, sends the diagnostic prompt (temperature 0.1, max_tokens 256) and parses the
answer back. It raises `LengthFinishReasonError` when max_tokens cut the answer; the script counts
every exception by name instead of stopping, and an answer is right when it parses and its
`pathologie` is the rule's label. The items are the benchmark's seeded sample (the same --limit
and --seed pick the same runners). Prints a line per set and one JSON line, and writes it to --out.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import openai
from pydantic import BaseModel, ValidationError

from aria.files import atomic_write_text
from aria.logs import setup_logging
from aria.prompts import DIAGNOSTIC_MAX_TOKENS, DIAGNOSTIC_TEMPERATURE, render_prompt
from aria.settings import Settings, get_settings
from evaluation.config import BenchmarkConfig, SetupError
from evaluation.inputs import EvalItem, load_eval

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SdkParseConfig:
    """What `python -m evaluation.sdk_parse` asks, of which server (parse_args fills the
    server's defaults from the settings)."""

    base_url: str
    model: str
    eval_path: Path
    outside_path: Path | None = None  # default: outside.jsonl next to eval_path, if present
    limit: int = 150
    seed: int = 0
    timeout_s: float = 60.0
    out: Path | None = None


class SeedOrderDiagnostic(BaseModel):
    """A client's own pydantic model, its fields in the seed's order (pathologie a free string),
    written as a client writes it (its own literals, not aria.schema's)."""

    pathologie: str
    confiance: Literal["élevée", "modérée", "faible"]
    justification: str


def ask(client: openai.OpenAI, model: str, item: EvalItem) -> tuple[bool, str | None]:
    """(right, the exception's name or None) for one runner, through `.parse`."""
    try:
        completion = client.chat.completions.parse(
            model=model,
            messages=[{"role": "user", "content": render_prompt(item.measurements)}],
            temperature=DIAGNOSTIC_TEMPERATURE,
            max_tokens=DIAGNOSTIC_MAX_TOKENS,
            response_format=SeedOrderDiagnostic,
        )
    except (openai.LengthFinishReasonError, openai.ContentFilterFinishReasonError) as e:
        return False, type(e).__name__
    except ValidationError:
        return False, "ValidationError"
    parsed = completion.choices[0].message.parsed
    if parsed is None:
        return False, "refusal"
    return parsed.pathologie == item.pathology, None


def summarise(results: list[tuple[EvalItem, bool, str | None]]) -> dict:
    """Exact match and exceptions, overall and per eval set."""

    def block(rows: list[tuple[EvalItem, bool, str | None]]) -> dict:
        n = len(rows)
        return {
            "n": n,
            "exact_match": sum(right for _, right, _ in rows) / n if n else None,
            "exception_rate": sum(err is not None for *_, err in rows) / n if n else None,
        }

    summary = block(results)
    summary["exceptions"] = dict(Counter(err for *_, err in results if err is not None))
    summary["per_set"] = {
        name: block([r for r in results if r[0].set == name])
        for name in dict.fromkeys(item.set for item, *_ in results)
    }
    return summary


def make_parser(settings: Settings) -> argparse.ArgumentParser:
    """The command line, its server defaults from `settings`."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--base-url", default=settings.base_url, help="the server's /v1 URL")
    p.add_argument("--model", default=settings.vllm_served_name, help="the served model name")
    p.add_argument("--eval", type=Path, default=settings.eval_path, help="the eval set")
    p.add_argument(
        "--outside",
        type=Path,
        default=None,
        help="second eval set (default: outside.jsonl next to --eval, if present)",
    )
    p.add_argument("--limit", type=int, default=150, help="runners per set (the seeded sample)")
    p.add_argument("--seed", type=int, default=0, help="the sample's seed (the benchmark's)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here (atomic)")
    return p


def parse_args(argv: list[str] | None = None, *, settings: Settings) -> SdkParseConfig:
    """The run's config from the command line over `settings`."""
    args = make_parser(settings).parse_args(argv)
    return SdkParseConfig(
        base_url=args.base_url,
        model=args.model,
        eval_path=args.eval,
        outside_path=args.outside,
        limit=args.limit,
        seed=args.seed,
        timeout_s=args.timeout,
        out=args.out,
    )


def main(cfg: SdkParseConfig, settings: Settings) -> int:
    """Ask every sampled runner through `.parse` with the API key of `settings`; print a line
    per set and the JSON line. Returns 0, or 2 when nothing was measured."""
    outside = cfg.outside_path or cfg.eval_path.with_name("outside.jsonl")
    sample = BenchmarkConfig(
        targets=[],
        eval_path=cfg.eval_path,
        reports_dir=Path("reports"),
        outside_path=outside if outside.exists() else None,
        seed=cfg.seed,
    )
    try:
        items = load_eval(sample, cfg.limit)
    except SetupError as e:
        log.error("%s", e)
        return 2
    client = openai.OpenAI(
        base_url=cfg.base_url,
        api_key=settings.api_key_value(),
        timeout=cfg.timeout_s,
        max_retries=0,
    )
    log.info("%d runners through .parse on %s at %s", len(items), cfg.model, cfg.base_url)
    try:
        results = [(item, *ask(client, cfg.model, item)) for item in items]
    except openai.APIConnectionError:
        log.error(
            "no server answers at %s: start one (`make serve-ft-bg`) or pass --base-url",
            cfg.base_url,
        )
        return 2
    except openai.APIStatusError as e:
        log.error(
            "the server at %s answered %s: %s (a 401 means VLLM_API_KEY differs from the "
            "server's; a 404, --model is not served)",
            cfg.base_url,
            e.status_code,
            e.message,
        )
        return 2
    summary = {"base_url": cfg.base_url, "model": cfg.model, **summarise(results)}
    for name, block in summary["per_set"].items():
        print(
            f"{name:8s} n {block['n']:4d}  exact match {block['exact_match']:.1%}  "
            f"exceptions {block['exception_rate']:.1%}"
        )
    print(f"exceptions: {summary['exceptions'] or 'none'}")
    print(json.dumps(summary))
    if cfg.out:
        atomic_write_text(cfg.out, json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    setup_logging()
    settings = get_settings()
    raise SystemExit(main(parse_args(settings=settings), settings))
