"""The diagnostic answer: a pydantic model and the JSON schema handed to guided decoding.

The justification is bounded so that the whole JSON always fits in the diagnostic call's
max_tokens, even if every byte became one token: a guided answer cut by max_tokens mid-string is
invalid JSON. Its characters are restricted to printable ASCII without quote or backslash, so the
model cannot spend tokens on escape sequences or multi-byte characters.

The bound lives in the regular expression alone (`{0,N}`), not in minLength/maxLength: vLLM's
xgrammar backend refuses a string that has both a pattern and length keywords (xgrammar issue
966), and xgrammar 0.2.8 fails to compile a bounded repetition above 128, hence N = 120. The
lower bound is 0 because guided decoding was seen to emit an empty justification under a `{1,N}`
pattern (1 answer in 100, untrained model, concurrent requests): the validator must accept all
that the engine can emit, or "100% schema-valid" breaks. The benchmark scores the reason's
content (grounding, keyword coverage); the reference answers are never empty.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from aria.domain import CONFIDENCES, PATHOLOGIES

DIAGNOSTIC_SCHEMA_NAME = "diagnostic"
JUSTIFICATION_MAX_CHARS = 120
# The separators vLLM hands xgrammar under `disable_any_whitespace`: compact JSON, no spaces.
GUIDED_SEPARATORS = (",", ":")
# Printable ASCII except '"' and '\\': one byte per character, never an escape sequence.
JUSTIFICATION_PATTERN = rf"^[ !#-\[\]-~]{{0,{JUSTIFICATION_MAX_CHARS}}}$"


class Diagnostic(BaseModel):
    """What the diagnostic call returns: a canonical pathology, a confidence band, a short reason."""

    model_config = ConfigDict(extra="forbid")

    # The justification comes first: the model writes its ranking of the rules
    # (aria.references.ranking_trace) before it names the pathology. Guided decoding emits the
    # properties in this order.
    justification: str = Field(
        pattern=JUSTIFICATION_PATTERN,
        description="the rules ranked, then the measured value(s) that decided, with thresholds",
    )
    pathologie: Literal[PATHOLOGIES] = Field(description="one of the six canonical pathologies")  # type: ignore[valid-type]
    confiance: Literal[CONFIDENCES] = Field(description="élevée, modérée or faible")  # type: ignore[valid-type]

    def to_json(self) -> str:
        """The exact text the model is taught: keys in schema order, accents kept, and the
        separators the grammar allows when whitespace is disabled (compact JSON)."""
        return json.dumps(self.model_dump(), ensure_ascii=False, separators=GUIDED_SEPARATORS)


def diagnostic_json_schema() -> dict:
    """The JSON schema S of the diagnostic call (enums, bounded justification, no extra keys)."""
    return Diagnostic.model_json_schema()


def diagnostic_response_format() -> dict:
    """The OpenAI `response_format` body that asks vLLM for guided JSON with the diagnostic schema."""
    return {
        "type": "json_schema",
        "json_schema": {"name": DIAGNOSTIC_SCHEMA_NAME, "schema": diagnostic_json_schema()},
    }


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
