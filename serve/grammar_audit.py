"""Can the served model write its own answers under guided decoding? Walk xgrammar's token mask.

    python -m serve.grammar_audit                    # make grammar-audit: the profile's aria-ft-dpo
    python -m serve.grammar_audit --model DIR        # any model folder (MedGemma's before serving)

vLLM's xgrammar backend builds a token mask at each step from the request's JSON schema and the
model's tokenizer, and a token outside the mask can never be sampled. Where the mask leaves out a
token the model was trained to write, the model writes something else, and no error says so. That
happened here: xgrammar 0.2.8 and 0.2.9 leave some valid tokens out of the mask (seen: a
vocabulary of `xe` and `xlxe`, compiled for the literal `"xlxe"`, allows neither token; with `xa`
in place of `xe` it allows `xlxe`; `tests/test_grammar_audit.py` pins both). The tiny tokenizer
wrote `élevée` as one token, `Ã©levÃ©e`, beside `Ã©e`, and the mask never allowed it: under
guided decoding the served model answered `modérée` for every `élevée` runner, while the same
model answered `élevée` in process (docs/serving.md, "What the grammar lets the model write").

The audit writes the answers the model gives (each pathology with each confidence, and the
reference answers of 120 sampled runners of every label and slice) as its tokenizer encodes them,
in the seed's schema and in the project's schema in each field order, and walks xgrammar's
matcher over it as vLLM does (`TokenizerInfo.from_huggingface`, no whitespace, compact
separators). At each step it asks whether the mask allows the next token; every token it does not
allow is reported with the text before it. Exit code 0 when every token is allowed, 1 when some
are not, 2 when the model folder has no tokenizer. It runs on CPU in seconds, needs no server,
and reads any model folder: run it on MedGemma's before serving it.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aria.domain import CONFIDENCES, EXAMPLE_MEASUREMENTS, PATHOLOGIES
from aria.files import atomic_write_text
from aria.logs import setup_logging
from aria.references import reference_justification
from aria.schema import (
    FIELD_ORDER,
    FIELD_ORDERS,
    GUIDED_SEPARATORS,
    SEED_DIAGNOSTIC_SCHEMA,
    Diagnostic,
    diagnostic_json_schema,
)
from aria.settings import Settings, get_settings

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_MASKED = 1
EXIT_NO_TOKENIZER = 2


@dataclass
class Masked:
    """A token the mask left out: which schema, which answer, the text before it."""

    schema: str
    token_id: int
    token: str
    before: str
    answer: str
    why: str = "masked"

    def line(self) -> str:
        return (
            f"[{self.schema}] token {self.token_id} {self.token!r} {self.why} after "
            f"...{self.before[-40:]!r}"
        )


@dataclass
class AuditResult:
    answers: int = 0
    tokens: int = 0
    masked: list[Masked] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.masked

    def as_dict(self) -> dict[str, Any]:
        distinct = sorted({(m.token_id, m.token) for m in self.masked})
        return {
            "answers": self.answers,
            "tokens": self.tokens,
            "masked": len(self.masked),
            "masked_tokens": [{"id": i, "token": t} for i, t in distinct],
            "examples": [m.__dict__ for m in self.masked[:10]],
            "ok": self.ok,
        }


class HFEncoder:
    """A transformers tokenizer as the audit reads it: text to ids (no special tokens), a token
    as the vocabulary writes it, and ids back to text."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def token(self, token_id: int) -> str:
        return self.tokenizer.convert_ids_to_tokens(token_id)

    def text(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))


def audit_answers(
    tokenizer_info: Any, encode: HFEncoder, schemas: Iterable[tuple[str, dict, Sequence[str]]]
) -> AuditResult:
    """Walk xgrammar's matcher over every answer of each (name, schema, answers): the mask at
    each step must allow the answer's next token. `encode(text)` gives the model's token ids,
    `encode.token(id)` and `encode.text(ids)` what the report shows (`HFEncoder`).

    Compiled as vLLM compiles a `response_format` json_schema with `disable_any_whitespace`.
    """
    import xgrammar as xgr

    compiler = xgr.GrammarCompiler(tokenizer_info)
    result = AuditResult()
    for name, schema, answers in schemas:
        compiled = compiler.compile_json_schema(
            json.dumps(schema), any_whitespace=False, separators=GUIDED_SEPARATORS
        )
        for answer in answers:
            result.answers += 1
            matcher = xgr.GrammarMatcher(compiled)
            bitmask = xgr.allocate_token_bitmask(1, tokenizer_info.vocab_size)
            ids = encode(answer)
            for k, token_id in enumerate(ids):
                result.tokens += 1
                matcher.fill_next_token_bitmask(bitmask)
                allowed = bool((int(bitmask[0, token_id // 32]) >> (token_id % 32)) & 1)
                accepted = matcher.accept_token(token_id)
                if not (allowed and accepted):
                    # Masked: the engine never samples it. Refused: the grammar itself rejects
                    # the answer's text, and nothing after it can be walked.
                    why = "masked" if accepted else "refused by the grammar"
                    result.masked.append(
                        Masked(
                            name,
                            token_id,
                            encode.token(token_id),
                            encode.text(ids[:k]),
                            answer,
                            why,
                        )
                    )
                if not accepted:
                    break
    return result


AUDIT_RUNNERS = 120  # sampled runners (every label and slice), beside the label x confidence grid


def model_answers(order: Sequence[str] = FIELD_ORDER, runners: int = AUDIT_RUNNERS) -> list[str]:
    """The answers the model writes, serialised as it writes them (compact, the keys in
    `order`): every label with every confidence (the example runner's justification), then the
    reference answer of `runners` sampled runners (a fixed seed; every label and slice, so every
    lead, key and number form of the justifications)."""
    import random

    from aria.population import balanced_plan, sample_measurements
    from aria.references import reference_diagnostic

    justification = reference_justification(EXAMPLE_MEASUREMENTS)
    grid = [
        Diagnostic(pathologie=p, confiance=c, justification=justification)
        for p in PATHOLOGIES
        for c in CONFIDENCES
    ]
    rng = random.Random(0)
    sampled = [
        reference_diagnostic(sample_measurements(rng, target, slice_name))
        for target, slice_name in balanced_plan(runners)
    ]
    return [d.to_json(order) for d in grid + sampled]


def contract_schemas() -> list[tuple[str, dict, list[str]]]:
    """The seed's schema (its own order) and the project's in each field order."""
    schemas: list[tuple[str, dict, list[str]]] = [
        ("seed", SEED_DIAGNOSTIC_SCHEMA, model_answers(FIELD_ORDER))
    ]
    for order in FIELD_ORDERS:
        name = "project " + "-".join(k[0] for k in order)
        schemas.append((name, diagnostic_json_schema(order), model_answers(order)))
    return schemas


def audit_model(model_dir: Path) -> AuditResult:
    """The audit of a model folder's tokenizer, its TokenizerInfo built as vLLM builds it."""
    import xgrammar as xgr
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    text_config = getattr(config, "text_config", None) or config
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=text_config.vocab_size)
    return audit_answers(info, HFEncoder(tokenizer), contract_schemas())


@dataclass
class AuditConfig:
    """What `python -m serve.grammar_audit` audits and where the JSON goes besides stdout."""

    model: Path | None = None  # default: the profile's aria-ft-dpo folder
    json: Path | None = None


def main(cfg: AuditConfig, settings: Settings) -> int:
    """Audit the model (cfg.model, else `settings`' aria-ft-dpo); print the masked tokens, the
    summary line, then the JSON line; return the exit code."""
    model = cfg.model or settings.model_dir("aria-ft-dpo")
    if not (model / "tokenizer_config.json").exists():
        log.error(
            "%s has no tokenizer_config.json: pass a model folder, e.g. "
            "data/models/tiny/aria-ft-dpo after `make train-all`",
            model,
        )
        return EXIT_NO_TOKENIZER
    result = audit_model(model)
    summary = {"model": str(model), **result.as_dict()}
    for m in result.masked[:10]:
        print(m.line())
    verdict = "every token allowed" if result.ok else f"{len(result.masked)} tokens masked"
    print(f"grammar audit of {model}: {result.answers} answers, {result.tokens} tokens, {verdict}")
    if cfg.json:
        atomic_write_text(cfg.json, json.dumps(summary, ensure_ascii=False, indent=2) + "\n")
    print(json.dumps(summary, ensure_ascii=False))
    return EXIT_OK if result.ok else EXIT_MASKED


def parse_args(argv: list[str] | None = None) -> AuditConfig:
    """Command-line flags → AuditConfig."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model", type=Path, help="a model folder (default: the profile's aria-ft-dpo)"
    )
    parser.add_argument("--json", type=Path, help="also write the result there (atomically)")
    return AuditConfig(**vars(parser.parse_args(argv)))


if __name__ == "__main__":
    setup_logging()
    settings = get_settings()
    raise SystemExit(main(parse_args(), settings))
