"""The diagnostic answer: a pydantic model, the JSON schemas handed to guided decoding, field orders.

Two request schemas reach the same model (DOMAIN.md):
- the seed's, sent verbatim by ARIA's middle service (`SEED_DIAGNOSTIC_SCHEMA`): `pathologie` a free
  string, properties in the order pathologie, confiance, justification;
- the project's stricter schema S (`Diagnostic`): `pathologie` the enum of the six labels, a bounded
  justification, no additional properties, in the same order.
xgrammar writes the properties in the schema's order, so the order is part of the contract: the
seed's order is the canonical one (`FIELD_ORDER`), and the training data also teaches the five other
orders (`FIELD_ORDERS`) so that a client whose schema lists the fields otherwise still gets a right
answer (docs/training.md, "What the answers teach").

The justification is bounded so that the whole JSON always fits in the diagnostic call's
max_tokens, even if every byte became one token: a guided answer cut by max_tokens mid-string is
invalid JSON. Its characters are restricted to printable ASCII without quote or backslash, so the
model cannot spend tokens on escape sequences or multi-byte characters; the reference wording is
French written without accents (aria.references).

The bound lives in the regular expression alone (`{0,N}`), not in minLength/maxLength: vLLM's
xgrammar backend refuses a string that has both a pattern and length keywords (xgrammar issue
966), and xgrammar 0.2.8 fails to compile a bounded repetition above 128, hence N = 120. The
lower bound is 0 because guided decoding was seen to emit an empty justification under a `{1,N}`
pattern (1 answer in 100, untrained model, concurrent requests): the validator must accept all
that the engine can emit, or "100% schema-valid" breaks. The benchmark scores the reason's
content (grounding, keyword coverage); the reference answers are never empty.

Whether an answer conforms is checked here too, without pydantic: `conforms_to_schema` reads a
flat object schema (the seed's or S), `is_json_prefix` accepts a guided answer cut by max_tokens
when what was written follows the field order (the health check and the benchmark use both).
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from aria.domain import CONFIDENCES, PATHOLOGIES

DIAGNOSTIC_SCHEMA_NAME = "diagnostic"
JUSTIFICATION_MAX_CHARS = 120
# The separators vLLM hands xgrammar under `disable_any_whitespace`: compact JSON, no spaces.
GUIDED_SEPARATORS = (",", ":")
# Printable ASCII except '"' and '\\': one byte per character, never an escape sequence.
JUSTIFICATION_PATTERN = rf"^[ !#-\[\]-~]{{0,{JUSTIFICATION_MAX_CHARS}}}$"

# The seed's property order, the canonical one: the label first, then confidence, then the reason.
FIELD_ORDER: tuple[str, ...] = ("pathologie", "confiance", "justification")
# Every order a client's schema may impose; the canonical one first.
FIELD_ORDERS: tuple[tuple[str, ...], ...] = tuple(itertools.permutations(FIELD_ORDER))

# The seed README's diagnostic schema, verbatim: what ARIA's middle service sends.
SEED_DIAGNOSTIC_SCHEMA: dict = {
    "type": "object",
    "properties": {
        "pathologie": {"type": "string"},
        "confiance": {"enum": ["élevée", "modérée", "faible"]},
        "justification": {"type": "string"},
    },
    "required": ["pathologie", "confiance", "justification"],
}


class Diagnostic(BaseModel):
    """What the diagnostic call returns: a canonical pathology, a confidence band, a short reason."""

    model_config = ConfigDict(extra="forbid")

    # Declared in FIELD_ORDER: the JSON schema lists the properties in this order.
    pathologie: Literal[PATHOLOGIES] = Field(description="one of the six canonical pathologies")  # type: ignore[valid-type]
    confiance: Literal[CONFIDENCES] = Field(description="élevée, modérée or faible")  # type: ignore[valid-type]
    justification: str = Field(
        pattern=JUSTIFICATION_PATTERN,
        description="the deciding measurement(s) with measured value and threshold, in French",
    )

    def to_json(self, order: Sequence[str] = FIELD_ORDER) -> str:
        """The exact text the model is taught: keys in `order` (a permutation of FIELD_ORDER),
        accents kept, and the separators the grammar allows when whitespace is disabled."""
        check_field_order(order)
        data = self.model_dump()
        return json.dumps(
            {k: data[k] for k in order}, ensure_ascii=False, separators=GUIDED_SEPARATORS
        )


def check_field_order(order: Sequence[str]) -> tuple[str, ...]:
    """`order` as a tuple, or ValueError naming the three fields it must permute."""
    order = tuple(order)
    if sorted(order) != sorted(FIELD_ORDER):
        raise ValueError(f"field order {order} must be a permutation of {', '.join(FIELD_ORDER)}")
    return order


def reordered_schema(schema: dict, order: Sequence[str]) -> dict:
    """A copy of an object schema whose `properties` (and `required`) follow `order`."""
    order = check_field_order(order)
    out = copy.deepcopy(schema)
    out["properties"] = {k: out["properties"][k] for k in order}
    out["required"] = [k for k in order if k in out.get("required", ())]
    return out


def diagnostic_json_schema(order: Sequence[str] = FIELD_ORDER) -> dict:
    """The JSON schema S of the diagnostic call (enums, bounded justification, no extra keys)."""
    return reordered_schema(Diagnostic.model_json_schema(), order)


def response_format(schema: dict) -> dict:
    """The OpenAI `response_format` body that asks vLLM for guided JSON with `schema`."""
    return {
        "type": "json_schema",
        "json_schema": {"name": DIAGNOSTIC_SCHEMA_NAME, "schema": schema},
    }


def diagnostic_response_format(order: Sequence[str] = FIELD_ORDER) -> dict:
    """`response_format` with the project's schema S, its properties in `order`."""
    return response_format(diagnostic_json_schema(order))


def seed_response_format() -> dict:
    """`response_format` of the seed's diagnostic body, verbatim."""
    return response_format(copy.deepcopy(SEED_DIAGNOSTIC_SCHEMA))


def worst_case_diagnostic_bytes() -> int:
    """UTF-8 length of the longest JSON the schema admits: an upper bound on its tokens."""
    longest = Diagnostic.model_construct(
        pathologie=max(PATHOLOGIES, key=lambda s: len(s.encode())),
        confiance=max(CONFIDENCES, key=lambda s: len(s.encode())),
        justification="~" * JUSTIFICATION_MAX_CHARS,
    )
    return len(longest.to_json().encode())


def parse_diagnostic(text: str) -> Diagnostic:
    """Parse and validate a model's answer; raises pydantic.ValidationError or ValueError."""
    return Diagnostic.model_validate_json(text)


# ---------------------------------------------------------------- conformance of guided JSON


def conforms_to_schema(obj: Any, schema: Mapping[str, Any]) -> bool:
    """Whether `obj` satisfies a flat object schema such as the seed's diagnostic schema.

    Supports what the diagnostic schemas use: `type` object/string, `properties`, `required`,
    `additionalProperties: false`, `enum` and `pattern` (searched as Python regex).
    """
    if not isinstance(obj, dict):
        return False
    properties = schema.get("properties", {})
    if any(key not in obj for key in schema.get("required", ())):
        return False
    if schema.get("additionalProperties") is False and set(obj) - set(properties):
        return False
    for key, rule in properties.items():
        if key not in obj:
            continue
        value = obj[key]
        if rule.get("type") == "string" and not isinstance(value, str):
            return False
        if "enum" in rule and value not in rule["enum"]:
            return False
        if "pattern" in rule and not (isinstance(value, str) and re.search(rule["pattern"], value)):
            return False
    return True


def _read_string(text: str, i: int) -> tuple[str | None, int, bool]:
    """(raw content, index after it, closed) of the JSON string starting at text[i]; content None
    when text[i] does not open a string."""
    if i >= len(text) or text[i] != '"':
        return None, i, False
    j = i + 1
    while j < len(text):
        if text[j] == "\\":
            j += 2
            continue
        if text[j] == '"':
            return text[i + 1 : j], j + 1, True
        j += 1
    return text[i + 1 :], len(text), False


def is_json_prefix(text: str, order: Sequence[str]) -> bool:
    """Whether `text` is a JSON object of string values whose keys come exactly in `order`, or a
    beginning of one (what guided decoding returns when max_tokens cuts it).

    A complete text must close the object after the last key of `order`; a cut text may stop
    anywhere, even inside a key or a value.
    """
    n = len(text)

    def skip(i: int) -> int:
        while i < n and text[i] in " \t\r\n":
            i += 1
        return i

    i = skip(0)
    if i >= n or text[i] != "{":
        return False
    i, k = i + 1, 0  # k: how many keys are complete
    while True:
        i = skip(i)
        if i >= n:
            return True
        if text[i] == "}" and k == 0:
            return not order and skip(i + 1) == n
        if k >= len(order):
            return False
        key, i, closed = _read_string(text, i)
        if key is None or (closed and key != order[k]):
            return False
        if not closed:
            return order[k].startswith(key)
        i = skip(i)
        if i >= n:
            return True
        if text[i] != ":":
            return False
        value, i, closed = _read_string(text, skip(i + 1))
        if i >= n and value is None:
            return True  # cut right after the colon
        if value is None:
            return False
        if not closed:
            return True
        k += 1
        i = skip(i)
        if i >= n:
            return True
        if text[i] == "}":
            return k == len(order) and skip(i + 1) == n
        if text[i] != "," or k >= len(order):
            return False
        i += 1
