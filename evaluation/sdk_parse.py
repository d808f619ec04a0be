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
import sys
from collections import Counter
from pathlib import Path
from typing import Literal

import openai
from pydantic import BaseModel, ValidationError

from aria.files import atomic_write_text
from aria.prompts import DIAGNOSTIC_MAX_TOKENS, DIAGNOSTIC_TEMPERATURE, render_prompt
from aria.settings import get_settings
from evaluation.config import BenchmarkConfig, SetupError
from evaluation.inputs import EvalItem, load_eval


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


def make_parser() -> argparse.ArgumentParser:
    settings = get_settings()
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


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    outside = args.outside or args.eval.with_name("outside.jsonl")
    cfg = BenchmarkConfig(
        targets=[],
        eval_path=args.eval,
        reports_dir=Path("reports"),
        outside_path=outside if outside.exists() else None,
        seed=args.seed,
    )
    try:
        items = load_eval(cfg, args.limit)
    except SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    client = openai.OpenAI(
        base_url=args.base_url,
        api_key=get_settings().api_key_value(),
        timeout=args.timeout,
        max_retries=0,
    )
    try:
        results = [(item, *ask(client, args.model, item)) for item in items]
    except openai.APIConnectionError:
        print(
            f"error: no server answers at {args.base_url}: start one (`make serve-ft-bg`) or "
            "pass --base-url",
            file=sys.stderr,
        )
        return 2
    except openai.APIStatusError as e:
        print(
            f"error: the server at {args.base_url} answered {e.status_code}: {e.message} "
            "(a 401 means VLLM_API_KEY differs from the server's; a 404, --model is not served)",
            file=sys.stderr,
        )
        return 2
    summary = {"base_url": args.base_url, "model": args.model, **summarise(results)}
    for name, block in summary["per_set"].items():
        print(
            f"{name:8s} n {block['n']:4d}  exact match {block['exact_match']:.1%}  "
            f"exceptions {block['exception_rate']:.1%}"
        )
    print(f"exceptions: {summary['exceptions'] or 'none'}")
    print(json.dumps(summary))
    if args.out:
        atomic_write_text(args.out, json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
