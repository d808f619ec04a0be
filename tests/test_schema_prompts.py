"""The diagnostic schema, the reference answers and the prompts of the two calls."""

import itertools
import json
import random
import re

import pytest
from pydantic import ValidationError

from aria.domain import (
    MEASUREMENT_KEYS,
    MEASUREMENTS,
    PATHOLOGIES,
    RULES,
    THRESHOLD_BY_KEY,
    exceedances,
    fired_rules,
    keys_by_exceedance,
    label,
    percent_of_threshold,
    relative_exceedance,
)
from aria.population import SLICES, outside_measurements, sample_measurements
from aria.prompts import (
    DIAGNOSTIC_MAX_TOKENS,
    diagnostic_messages,
    diagnostic_request,
    render_measurements,
    report_messages,
    report_request,
)
from aria.records import ungrounded_numbers
from aria.references import reference_diagnostic, reference_justification
from aria.schema import (
    FIELD_ORDER,
    FIELD_ORDERS,
    GUIDED_SEPARATORS,
    JUSTIFICATION_MAX_CHARS,
    SEED_DIAGNOSTIC_SCHEMA,
    Diagnostic,
    conforms_to_schema,
    diagnostic_json_schema,
    diagnostic_response_format,
    is_json_prefix,
    parse_diagnostic,
    seed_response_format,
    worst_case_diagnostic_bytes,
)

RUNNER = {
    "inclinaison_tronc": 4.2,
    "valgus_genou": 13.4,
    "adduction_hanche": 6.1,
    "longueur_foulee": 1.18,
    "pronation_pied": 3.9,
    "heel_strike_index": 0.52,
    "dorsiflexion_max": 11.0,
    "age": 34,
    "sexe": "F",
    "cadence_pas_min": 172,
}


def test_schema_has_enums_bound_and_no_extra_properties():
    schema = diagnostic_json_schema()
    # The seed's order: guided decoding writes the label first, as for the seed's own body.
    assert list(schema["properties"]) == ["pathologie", "confiance", "justification"]
    assert set(schema["required"]) == {"pathologie", "confiance", "justification"}
    assert schema["additionalProperties"] is False
    assert schema["properties"]["pathologie"]["enum"] == list(PATHOLOGIES)
    assert schema["properties"]["confiance"]["enum"] == ["élevée", "modérée", "faible"]
    justification = schema["properties"]["justification"]
    # The pattern alone carries the bound: vLLM refuses pattern + minLength/maxLength.
    assert justification["pattern"].endswith(f"{{0,{JUSTIFICATION_MAX_CHARS}}}$")
    assert not {"minLength", "maxLength"} & set(justification)


def test_longest_answer_fits_in_max_tokens_even_one_token_per_byte():
    # One byte per token is the worst a byte-fallback tokenizer does; +1 for the EOS token.
    assert worst_case_diagnostic_bytes() + 1 <= DIAGNOSTIC_MAX_TOKENS


@pytest.mark.parametrize(
    "payload",
    [
        {"pathologie": "Entorse", "confiance": "faible", "justification": "x"},
        {"pathologie": "SFP", "confiance": "faible", "justification": "x"},
        {"pathologie": PATHOLOGIES[0], "confiance": "haute", "justification": "x"},
        {"pathologie": PATHOLOGIES[0], "confiance": "faible", "justification": "é"},
        {"pathologie": PATHOLOGIES[0], "confiance": "faible", "justification": "a" * 121},
        {"pathologie": PATHOLOGIES[0], "confiance": "faible", "justification": "x", "extra": 1},
        {"pathologie": PATHOLOGIES[0], "confiance": "faible"},
    ],
)
def test_schema_rejects_what_the_contract_forbids(payload):
    with pytest.raises(ValidationError):
        parse_diagnostic(json.dumps(payload))


def test_reference_diagnostic_round_trips_and_cites_only_input_values():
    diag = reference_diagnostic(RUNNER)
    assert diag.pathologie == "Syndrome fémoro-patellaire"
    assert diag.confiance == "élevée"
    assert diag.justification == "Seul signal d'alerte : valgus_genou 13.4 (seuil 10.0)."
    text = diag.to_json()
    # The seed's order: the label first, then the confidence, then the reason.
    assert text.startswith('{"pathologie":"Syndrome fémoro-patellaire","confiance":"élevée",')
    assert text.endswith(
        '"justification":"Seul signal d\'alerte : valgus_genou 13.4 (seuil 10.0)."}'
    )
    assert parse_diagnostic(text) == diag
    assert not ungrounded_numbers(diag.justification, RUNNER)


@pytest.mark.parametrize("order", FIELD_ORDERS, ids="-".join)
def test_an_answer_in_any_field_order_round_trips(order):
    diag = reference_diagnostic(RUNNER)
    text = diag.to_json(order)
    assert list(json.loads(text)) == list(order)
    assert parse_diagnostic(text) == diag
    schema = diagnostic_json_schema(order)
    assert list(schema["properties"]) == list(order) == schema["required"]


def test_a_field_order_must_permute_the_three_fields():
    with pytest.raises(ValueError, match="permutation of pathologie, confiance, justification"):
        reference_diagnostic(RUNNER).to_json(("pathologie", "confiance"))
    with pytest.raises(ValueError, match="permutation"):
        diagnostic_json_schema(("pathologie", "pathologie", "justification"))


def test_justification_says_how_many_signals_fire_and_cites_the_deciding_values():
    # percents of threshold: tronc 60, genou 134, hanche 61, foulee 87, pied 65, heel 74, dorsi 73
    two = {**RUNNER, "pronation_pied": 9.0}  # 150 % beats the knee's 134 %
    assert reference_justification(two) == (
        "Le plus net de deux signaux d'alerte : pronation_pied 9.0 (seuil 6.0)."
    )
    # A wrong answer (the DPO pairs' runner-up) cites the wrong measurement under the same lead.
    assert reference_justification(two, "Syndrome fémoro-patellaire") == (
        "Le plus net de deux signaux d'alerte : valgus_genou 13.4 (seuil 10.0)."
    )
    with pytest.raises(ValueError, match="unknown pathology 'SFP'"):
        reference_justification(two, "SFP")
    calm = {**RUNNER, "valgus_genou": 9.5}  # 95 %: nothing fires, the knee is the closest
    assert reference_justification(calm) == (
        "Aucun signal d'alerte ; le plus proche : valgus_genou 9.5 (seuil 10.0)."
    )
    # The Achilles signal needs both of its measurements above their thresholds: a heel strike
    # above 0.70 alone crosses a threshold and fires nothing, and the lead counts signals.
    half = {**calm, "heel_strike_index": 1.0, "dorsiflexion_max": 11.0}  # 143 %, 73 %
    assert fired_rules(half) == []
    assert reference_justification(half).startswith("Aucun signal d'alerte ; le plus proche :")
    assert "seuil franchi" not in reference_justification(half)
    both = {**RUNNER, "heel_strike_index": 1.0, "dorsiflexion_max": 21.0}  # 143 %, 140 %
    assert label(both)[0] == "Tendinite Achille"
    assert reference_justification(both) == (
        "Le plus net de deux signaux d'alerte : heel_strike_index 1.00 (seuil 0.70) et "
        "dorsiflexion_max 21.0 (seuil 15.0)."
    )
    for measurements in (RUNNER, two, calm, both):
        text = reference_justification(measurements)
        assert not ungrounded_numbers(text, measurements)
        # French words for a clinician: no ranking code such as "G<T H>G".
        assert not re.search(r"\b[A-Z][<>][A-Z]\b", text)


def test_reference_justification_fits_the_schema_at_every_extreme():
    # Each measurement at its lower bound, its threshold or its upper bound: the longest values
    # (negative, three digits) and both Achilles clauses.
    choices = []
    for m in MEASUREMENTS:
        low = m.low + 0.01 if m.low_exclusive else m.low
        choices.append((low, THRESHOLD_BY_KEY[m.key], m.high))
    longest = 0
    for values in itertools.product(*choices):
        measurements = dict(zip(MEASUREMENT_KEYS, values, strict=True))
        text = reference_justification(measurements)
        longest = max(longest, len(text))
        Diagnostic(pathologie=label(measurements)[0], confiance="faible", justification=text)
    assert 80 < longest <= JUSTIFICATION_MAX_CHARS  # the extremes really are long


def test_diagnostic_prompt_lists_every_measurement_and_no_context():
    (message,) = diagnostic_messages(RUNNER)
    assert message["role"] == "user"
    content = message["content"]
    for fragment in [
        "valgus_genou : 13.4 ° (134 % du seuil)",
        "longueur_foulee : 1.18 m (87 % du seuil)",
        "heel_strike_index : 0.52 (74 % du seuil)",
    ]:
        assert fragment in content
    assert content.count("% du seuil") == len(MEASUREMENTS)
    assert "ans" not in content and "Contexte" not in content  # the rule never reads it
    assert "JSON" in content


def _prompt_keys(table: str) -> list[str]:
    return [line.removeprefix("- ").split(" : ")[0] for line in table.splitlines()]


def test_prompt_lists_the_largest_ratio_first():
    table = render_measurements(RUNNER)
    ratios = [int(re.search(r"\((\d+) % du seuil\)", line)[1]) for line in table.splitlines()]
    assert ratios == sorted(ratios, reverse=True) and len(ratios) == len(MEASUREMENTS)
    assert _prompt_keys(table)[0] == "valgus_genou"  # 134 %, the only one above its threshold
    # The pretraining tasks keep the table's order.
    assert _prompt_keys(render_measurements(RUNNER, ranked=False)) == list(MEASUREMENT_KEYS)


def _read_the_ranked_table(keys: list[str]) -> str:
    """The rule, read on the prompt's order alone (the docstring of keys_by_exceedance)."""
    (two_signal,) = [rule for rule in RULES if len(rule.thresholds) == 2]
    achilles = {key for key, _ in two_signal.thresholds}
    if set(keys[:2]) == achilles:
        return two_signal.pathology
    first = next(key for key in keys if key not in achilles)
    return next(rule.pathology for rule in RULES if rule.thresholds[0][0] == first)


def test_the_ranked_prompt_decides_as_the_rule_does():
    # Uniform values over wide bands, values on a coarse grid (exact ties, ties with the
    # Achilles rule's smaller signal) and the population's runners: the first lines decide.
    rng = random.Random(0)
    runners = []
    for _ in range(3000):
        runners.append(
            {
                m.key: round(THRESHOLD_BY_KEY[m.key] * rng.uniform(0.6, 1.4), m.decimals)
                for m in MEASUREMENTS
            }
        )
        runners.append(
            {
                m.key: THRESHOLD_BY_KEY[m.key] * rng.choice((0.9, 1.0, 1.1, 1.2))
                for m in MEASUREMENTS
            }
        )
    for i in range(1200):
        target, slice_name = PATHOLOGIES[i % 6], SLICES[i % 7 % len(SLICES)]
        runners.append(sample_measurements(rng, target, slice_name, independent=i % 2 == 0))
        runners.append(outside_measurements(rng))
    seen = set()
    for runner in runners:
        expected = label(runner)[0]
        assert _read_the_ranked_table(_prompt_keys(render_measurements(runner))) == expected
        assert keys_by_exceedance(runner) == _prompt_keys(render_measurements(runner))
        seen.add(expected)
    assert seen == set(PATHOLOGIES)


def test_report_prompt_keeps_the_context():
    (message,) = report_messages(RUNNER)
    assert "34 ans, femme, cadence 172 pas/min" in message["content"]
    assert "valgus_genou : 13.4 ° (134 % du seuil)" in message["content"]


def test_percent_of_threshold_ranks_like_the_rule():
    # The prompt's ratios order the single-signal rules exactly as their exceedances do.
    measurements = {**RUNNER, "inclinaison_tronc": 7.7, "pronation_pied": 6.5}
    single = [rule for rule in RULES if len(rule.thresholds) == 1]
    by_ratio = sorted(
        single,
        key=lambda r: (
            -float(percent_of_threshold(r.thresholds[0][0], measurements[r.thresholds[0][0]]))
        ),
    )
    by_rule = sorted(single, key=lambda r: -exceedances(measurements)[r.pathology])
    assert [r.pathology for r in by_ratio] == [r.pathology for r in by_rule]
    assert percent_of_threshold("inclinaison_tronc", 7.0) == "100"  # at the threshold: no fire
    assert percent_of_threshold("longueur_foulee", 1.36) == "101"


@pytest.mark.parametrize("m", MEASUREMENTS, ids=lambda m: m.key)
def test_one_display_step_above_a_threshold_shows_more_than_100(m):
    # Whole percent never hides a firing signal: the smallest value shown above the threshold
    # (threshold + one step of the displayed precision) reads 101 or more.
    threshold = THRESHOLD_BY_KEY[m.key]
    just_above = round(threshold + 10**-m.decimals, m.decimals)
    assert relative_exceedance(just_above, threshold) > 0
    assert int(percent_of_threshold(m.key, just_above)) >= 101
    assert percent_of_threshold(m.key, threshold) == "100"


def test_prompt_refuses_bad_measurements():
    with pytest.raises(ValueError, match="valgus_genou"):
        diagnostic_messages({**RUNNER, "valgus_genou": "high"})


def test_request_bodies_carry_the_seed_parameters():
    diag = diagnostic_request(RUNNER, "aria-ft")
    assert (diag["temperature"], diag["max_tokens"]) == (0.1, 256)
    assert diag["response_format"] == diagnostic_response_format()
    assert diag["response_format"]["json_schema"]["name"] == "diagnostic"
    rep = report_request(RUNNER, "aria-ft")
    assert (rep["temperature"], rep["max_tokens"]) == (0.3, 2048)
    assert "response_format" not in rep
    assert rep["messages"] == report_messages(RUNNER)
    assert "rapport" in rep["messages"][0]["content"]


def test_seed_body_is_the_seed_readme_verbatim():
    seed = diagnostic_request(RUNNER, "aria-ft", body="seed")
    # The seed README's body, as ARIA's middle service sends it (DOMAIN.md).
    assert seed["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "diagnostic",
            "schema": {
                "type": "object",
                "properties": {
                    "pathologie": {"type": "string"},
                    "confiance": {"enum": ["élevée", "modérée", "faible"]},
                    "justification": {"type": "string"},
                },
                "required": ["pathologie", "confiance", "justification"],
            },
        },
    }
    assert seed["response_format"] == seed_response_format()
    assert list(SEED_DIAGNOSTIC_SCHEMA["properties"]) == list(FIELD_ORDER)
    assert (seed["temperature"], seed["max_tokens"]) == (0.1, 256)
    assert seed["messages"] == diagnostic_messages(RUNNER)
    # A copy each time: a caller that edits its body cannot change the contract.
    seed["response_format"]["json_schema"]["schema"]["properties"].clear()
    assert SEED_DIAGNOSTIC_SCHEMA["properties"]
    order = ("justification", "confiance", "pathologie")
    project = diagnostic_request(RUNNER, "aria-ft", order=order)
    assert list(project["response_format"]["json_schema"]["schema"]["properties"]) == list(order)
    with pytest.raises(ValueError, match="seed, project"):
        diagnostic_request(RUNNER, "aria-ft", body="mine")


@pytest.mark.engine  # imports vLLM (~20 s)
def test_vllm_xgrammar_accepts_and_compiles_the_schema():
    """vLLM 400s a pattern with length keywords; xgrammar crashes on repetitions above 128.

    What we teach is what the grammar allows, under the project's schema and the seed's alike,
    and xgrammar holds the schema's property order.
    """
    xgr = pytest.importorskip("xgrammar", reason="xgrammar comes with the engine install")
    backend = pytest.importorskip("vllm.v1.structured_output.backend_xgrammar")
    vocab = [chr(i) for i in range(32, 127)] + ["é", "è", "<eos>"]
    compiler = xgr.GrammarCompiler(xgr.TokenizerInfo(vocab, stop_token_ids=[len(vocab) - 1]))
    answer = reference_diagnostic(RUNNER)
    for schema in (diagnostic_json_schema(), SEED_DIAGNOSTIC_SCHEMA):
        assert not backend.has_xgrammar_unsupported_json_features(schema)
        # Exactly the call vLLM's xgrammar backend makes under disable_any_whitespace.
        compiled = compiler.compile_json_schema(
            json.dumps(schema), any_whitespace=False, separators=GUIDED_SEPARATORS
        )

        def accepts(text: str, compiled=compiled) -> bool:
            matcher = xgr.GrammarMatcher(compiled)
            return all(
                matcher.accept_token(vocab.index(ch)) for ch in text
            ) and matcher.accept_token(len(vocab) - 1)

        assert accepts(answer.to_json())
        assert not accepts(json.dumps(answer.model_dump(), ensure_ascii=False))  # spaces
        assert not accepts(answer.to_json(("justification", "pathologie", "confiance")))


def test_an_empty_justification_is_schema_valid():
    """Guided decoding was seen to emit "" under a {1,N} pattern: what the engine emits validates."""
    answer = '{"pathologie":"Fasciite plantaire","confiance":"faible","justification":""}'
    assert parse_diagnostic(answer).justification == ""


# ---------------------------------------------------------------- conformance of guided JSON


def test_conforms_to_schema_reads_the_seed_schema():
    ok = {"pathologie": "lombalgie", "confiance": "faible", "justification": "x", "extra": 1}
    assert conforms_to_schema(ok, SEED_DIAGNOSTIC_SCHEMA)  # free string, extras allowed
    assert not conforms_to_schema(ok | {"confiance": "haute"}, SEED_DIAGNOSTIC_SCHEMA)
    assert not conforms_to_schema(
        {"pathologie": "x", "confiance": "faible"}, SEED_DIAGNOSTIC_SCHEMA
    )
    assert not conforms_to_schema(ok | {"justification": 3}, SEED_DIAGNOSTIC_SCHEMA)
    strict = diagnostic_json_schema()
    assert not conforms_to_schema(ok, strict)  # not an enum label, extra key
    good = {
        "pathologie": PATHOLOGIES[0],
        "confiance": "faible",
        "justification": "Seul signal d'alerte",
    }
    assert conforms_to_schema(good, strict)
    assert not conforms_to_schema(good | {"justification": 'a"b'}, strict)  # pattern


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ('{"pathologie":"Lombalgie mécanique","confiance":"faible","justification":"x"}', True),
        ('{"pathologie": "A", "confiance": "b", "justification": "c"}', True),  # spaces
        ('{"pathologie":"G<T H<T ; pronation 7.2 > 6', True),  # cut in a value
        ('{"pathologie":"A","confi', True),  # cut in a key
        ('{"pathologie":', True),
        ('{"pathologie":"a\\"b","conf', True),  # an escaped quote inside a value
        ("{", True),
        ('{"confiance":"faible"', False),  # wrong first key
        ('{"pathologie":"A","confiance":"b"}', False),  # closed before the last key
        ('{"pathologie":"A",}', False),
        ('{"pathologie":"A""confiance":"b"}', False),
        ('{"pathologie":"A","confiance":"b","justification":"c"} x', False),
        ('{"pathologie":"A","confiance":"b","justification":"c","x":"d"}', False),
        ("Lombalgie mécanique", False),
    ],
)
def test_is_json_prefix_in_the_schema_order(text, ok):
    assert is_json_prefix(text, FIELD_ORDER) is ok
