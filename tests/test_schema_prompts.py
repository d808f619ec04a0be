"""The diagnostic schema, the reference answers and the prompts of the two calls."""

import itertools
import json

import pytest
from pydantic import ValidationError

from aria.domain import (
    MEASUREMENT_KEYS,
    MEASUREMENTS,
    PATHOLOGIES,
    RULES,
    THRESHOLD_BY_KEY,
    exceedances,
    label,
    percent_of_threshold,
    relative_exceedance,
)
from aria.prompts import (
    DIAGNOSTIC_MAX_TOKENS,
    diagnostic_messages,
    diagnostic_request,
    report_messages,
    report_request,
)
from aria.records import cited_numbers, ungrounded_numbers
from aria.references import ranking_trace, reference_diagnostic, reference_justification
from aria.schema import (
    GUIDED_SEPARATORS,
    JUSTIFICATION_MAX_CHARS,
    Diagnostic,
    diagnostic_json_schema,
    diagnostic_response_format,
    parse_diagnostic,
    worst_case_diagnostic_bytes,
)

PROFILE = {
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
    # The justification comes first: guided decoding writes the ranking before the label.
    assert list(schema["properties"]) == ["justification", "pathologie", "confiance"]
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
    diag = reference_diagnostic(PROFILE)
    assert diag.pathologie == "Syndrome fémoro-patellaire"
    assert diag.confiance == "élevée"
    assert diag.justification.endswith(" ; valgus_genou 13.4 > 10.0")
    text = diag.to_json()
    assert text.startswith('{"justification":"G>T H<G ')
    assert text.endswith(',"pathologie":"Syndrome fémoro-patellaire","confiance":"élevée"}')
    assert parse_diagnostic(text) == diag
    assert not ungrounded_numbers(diag.justification, PROFILE)


def test_ranking_trace_is_a_running_maximum_of_comparisons():
    # percents of threshold: tronc 60, genou 134, hanche 61, foulee 87, pied 65, heel 74, dorsi 73
    assert ranking_trace(PROFILE) == "G>T H<G F<G P<G I<G D<G"
    two = {**PROFILE, "pronation_pied": 9.0}  # 150 % beats the knee's 134 %
    assert ranking_trace(two) == "G>T H<G F<G P>G I<P D<P"
    assert reference_justification(two).endswith(" ; pronation_pied 9.0 > 6.0")
    # A justification for the runner-up ranks as if it had won the comparison that decides.
    runner_up = "Syndrome fémoro-patellaire"
    assert ranking_trace(two, winner=runner_up) == "G>T H<G F<G P<G I<G D<G"
    assert reference_justification(two, runner_up).startswith("G>T H<G F<G P<G I<G D<G ; valgus")
    assert ranking_trace(two, winner=label(two)[0]) == ranking_trace(two)
    with pytest.raises(ValueError, match="unknown pathology 'SFP'"):
        ranking_trace(two, winner="SFP")
    # Equal exceedances keep the table's order, as the rule does.
    tie = {**PROFILE, "valgus_genou": 7.0, "adduction_hanche": 7.0}
    assert ranking_trace(tie).startswith("G>T H<G F>G")
    # Achille leads only when both of its signals beat the leader (its exceedance is the min).
    heel_only = {**PROFILE, "heel_strike_index": 1.0}  # 143 % > 134 %, dorsiflexion 73 %
    assert ranking_trace(heel_only).endswith("I>G D<G")
    assert label(heel_only)[0] == "Syndrome fémoro-patellaire"
    both = {**heel_only, "dorsiflexion_max": 21.0}  # 140 % > 134 %
    assert ranking_trace(both).endswith("I>G D>G")
    assert label(both)[0] == "Tendinite Achille"
    # The trace cites no number: the justification's numbers are the cited values alone.
    assert not cited_numbers(ranking_trace(PROFILE))
    assert not ungrounded_numbers(reference_justification(both), both)


def test_reference_justification_fits_the_schema_at_every_extreme():
    # Each measurement at its lower bound, its threshold or its upper bound: the longest values
    # (negative, three digits) and both Achilles clauses.
    choices = []
    for m in MEASUREMENTS:
        low = m.low + 0.01 if m.low_exclusive else m.low
        choices.append((low, THRESHOLD_BY_KEY[m.key], m.high))
    longest = 0
    for values in itertools.product(*choices):
        profile = dict(zip(MEASUREMENT_KEYS, values, strict=True))
        text = reference_justification(profile)
        longest = max(longest, len(text))
        Diagnostic(pathologie=label(profile)[0], confiance="faible", justification=text)
    assert 80 < longest <= JUSTIFICATION_MAX_CHARS  # the extremes really are long


def test_diagnostic_prompt_lists_every_measurement_and_no_context():
    (message,) = diagnostic_messages(PROFILE)
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


def test_report_prompt_keeps_the_context():
    (message,) = report_messages(PROFILE)
    assert "34 ans, femme, cadence 172 pas/min" in message["content"]
    assert "valgus_genou : 13.4 ° (134 % du seuil)" in message["content"]


def test_percent_of_threshold_ranks_like_the_rule():
    # The prompt's ratios order the single-signal rules exactly as their exceedances do.
    profile = {**PROFILE, "inclinaison_tronc": 7.7, "pronation_pied": 6.5}
    single = [rule for rule in RULES if len(rule.thresholds) == 1]
    by_ratio = sorted(
        single,
        key=lambda r: -float(percent_of_threshold(r.thresholds[0][0], profile[r.thresholds[0][0]])),
    )
    by_rule = sorted(single, key=lambda r: -exceedances(profile)[r.pathology])
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


def test_prompt_refuses_a_bad_profile():
    with pytest.raises(ValueError, match="valgus_genou"):
        diagnostic_messages({**PROFILE, "valgus_genou": "high"})


def test_request_bodies_carry_the_seed_parameters():
    diag = diagnostic_request(PROFILE, "aria-ft")
    assert (diag["temperature"], diag["max_tokens"]) == (0.1, 256)
    assert diag["response_format"] == diagnostic_response_format()
    assert diag["response_format"]["json_schema"]["name"] == "diagnostic"
    rep = report_request(PROFILE, "aria-ft")
    assert (rep["temperature"], rep["max_tokens"]) == (0.3, 2048)
    assert "response_format" not in rep
    assert rep["messages"] == report_messages(PROFILE)
    assert "rapport" in rep["messages"][0]["content"]


@pytest.mark.engine  # imports vLLM (~20 s)
def test_vllm_xgrammar_accepts_and_compiles_the_schema():
    """vLLM 400s a pattern with length keywords; xgrammar crashes on repetitions above 128."""
    xgr = pytest.importorskip("xgrammar", reason="xgrammar comes with the engine install")
    backend = pytest.importorskip("vllm.v1.structured_output.backend_xgrammar")
    schema = diagnostic_json_schema()
    assert not backend.has_xgrammar_unsupported_json_features(schema)
    vocab = [chr(i) for i in range(32, 127)] + ["é", "è", "<eos>"]
    compiler = xgr.GrammarCompiler(xgr.TokenizerInfo(vocab, stop_token_ids=[len(vocab) - 1]))
    # Exactly the call vLLM's xgrammar backend makes under disable_any_whitespace.
    compiled = compiler.compile_json_schema(
        json.dumps(schema), any_whitespace=False, separators=GUIDED_SEPARATORS
    )

    def accepts(text: str) -> bool:
        matcher = xgr.GrammarMatcher(compiled)
        return all(matcher.accept_token(vocab.index(ch)) for ch in text) and matcher.accept_token(
            len(vocab) - 1
        )

    answer = reference_diagnostic(PROFILE)
    assert accepts(answer.to_json())  # what we teach is what the grammar allows
    spaced = json.dumps(answer.model_dump(), ensure_ascii=False)
    assert not accepts(spaced)


def test_an_empty_justification_is_schema_valid():
    """Guided decoding was seen to emit "" under a {1,N} pattern: what the engine emits validates."""
    answer = '{"pathologie":"Fasciite plantaire","confiance":"faible","justification":""}'
    assert parse_diagnostic(answer).justification == ""
