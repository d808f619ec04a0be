"""serve.grammar_audit: does xgrammar's token mask let the model write its own answers?

Real xgrammar, real tokenizers, no server: the mask is computed as vLLM computes it.
"""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from serve import grammar_audit
from tests.test_serving import make_settings
from tiny.build import PRETRAINED_DIR
from tiny.tokenizer import UNMERGED, without_merges

TOKEN = UNMERGED[0]  # élevée as one token
MERGE = ("Ã©", "levÃ©e")  # the merge that formed it in the committed tokenizer


def _mask(vocab: list[str], grammar: str) -> list[str]:
    import torch
    import xgrammar as xgr

    info = xgr.TokenizerInfo(vocab, vocab_type=xgr.VocabType.RAW, vocab_size=len(vocab))
    matcher = xgr.GrammarMatcher(xgr.GrammarCompiler(info).compile_grammar(grammar))
    bitmask = xgr.allocate_token_bitmask(1, len(vocab))
    matcher.fill_next_token_bitmask(bitmask)
    logits = torch.zeros(1, len(vocab))
    xgr.apply_token_bitmask_inplace(logits, bitmask)
    return [vocab[i] for i in range(len(vocab)) if logits[0, i] == 0]


def test_xgrammar_leaves_a_valid_token_out_of_its_mask():
    """The engine bug the tiny tokenizer works around (UNMERGED). When this fails, xgrammar is
    fixed: the merge may come back (rebuild the tokenizer and rerun the audit)."""
    assert _mask(["xa", "xlxe"], 'root ::= "xlxe"') == ["xlxe"]
    assert _mask(["xe", "xlxe"], 'root ::= "xlxe"') == []  # `xlxe` is valid and left out
    assert _mask(["\u00e9e", "\u00e9lev\u00e9e"], 'root ::= "\u00e9lev\u00e9e"') == []


def _tiny_base_with(tmp_path, merges):
    folder = tmp_path / "base"
    shutil.copytree(PRETRAINED_DIR, folder)
    spec = json.loads((folder / "tokenizer.json").read_text())
    spec["model"]["merges"] = merges(spec["model"]["merges"])
    (folder / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
    return folder


def test_the_committed_tokenizer_writes_every_answer_through_the_mask():
    result = grammar_audit.audit_model(PRETRAINED_DIR)
    # 18 answers (6 labels x 3 confidences) and the sampled runners' reference answers, in the
    # seed's schema and in the project's 6 orders.
    assert result.answers == (18 + grammar_audit.AUDIT_RUNNERS) * 7
    assert result.tokens > 30 * result.answers
    assert result.ok, [m.line() for m in result.masked[:5]]


def test_the_audit_finds_the_token_the_mask_hides(tmp_path):
    """With the merge back, élevée is one token, and the mask never allows it: in every schema,
    in every `élevée` answer, and no other token is masked."""
    folder = _tiny_base_with(tmp_path, lambda merges: [*merges[:244], list(MERGE), *merges[244:]])
    result = grammar_audit.audit_model(folder)
    assert not result.ok
    assert {m.token for m in result.masked} == {TOKEN}
    elevee = sum(
        '"confiance":"élevée"' in answer
        for _, _, answers in grammar_audit.contract_schemas()
        for answer in answers
    )
    assert len(result.masked) == elevee >= 6 * 7
    assert {m.schema for m in result.masked} >= {"seed", "project p-c-j", "project j-c-p"}
    assert all(m.before.endswith('"confiance":"') for m in result.masked)
    assert all(m.why == "masked" for m in result.masked)
    # The CLI says so and exits 1.
    cfg = grammar_audit.parse_args(["--model", str(folder)])
    assert grammar_audit.main(cfg, make_settings(tmp_path)) == grammar_audit.EXIT_MASKED


def result_answers() -> int:
    return sum(len(answers) for _, _, answers in grammar_audit.contract_schemas())


def test_the_cli_exit_codes_and_json(tmp_path, capsys, caplog):
    settings = make_settings(tmp_path)
    out = tmp_path / "audit.json"
    cfg = grammar_audit.parse_args(["--model", str(PRETRAINED_DIR), "--json", str(out)])
    assert grammar_audit.main(cfg, settings) == 0
    summary = json.loads(out.read_text())
    assert summary["ok"] and summary["masked"] == 0 and summary["answers"] == result_answers()
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary
    caplog.set_level(logging.ERROR, logger="serve.grammar_audit")
    cfg = grammar_audit.parse_args(["--model", str(tmp_path)])
    assert grammar_audit.main(cfg, settings) == grammar_audit.EXIT_NO_TOKENIZER
    assert "no tokenizer_config.json" in caplog.text
    assert capsys.readouterr().out == ""  # the result is on stdout; a failure only in the log
    # Without --model, the settings passed in name the folder: their aria-ft-dpo.
    caplog.clear()
    code = grammar_audit.main(grammar_audit.parse_args([]), settings)
    assert code == grammar_audit.EXIT_NO_TOKENIZER
    assert f"{settings.model_dir('aria-ft-dpo')} has no tokenizer_config.json" in caplog.text


def test_without_merges_leaves_the_vocabulary_and_refuses_a_merge_it_lacks():
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(PRETRAINED_DIR / "tokenizer.json"))
    spec = json.loads(tok.to_str())
    spec["model"]["merges"] = [list(MERGE), *spec["model"]["merges"]]
    merged = Tokenizer.from_str(json.dumps(spec, ensure_ascii=False))
    assert merged.encode("élevée", add_special_tokens=False).tokens == [TOKEN]
    unmerged = without_merges(merged)
    assert unmerged.get_vocab() == tok.get_vocab()
    assert unmerged.encode("élevée", add_special_tokens=False).tokens == list(MERGE)
    with pytest.raises(ValueError, match="no merge of the tokenizer forms"):
        without_merges(tok)  # the committed tokenizer no longer holds it
    assert without_merges(tok, missing_ok=True).get_vocab() == tok.get_vocab()


def test_a_trained_tokenizer_never_forms_the_unmerged_tokens():
    """`make tiny-pretrain` trains the tokenizer afresh: whatever pair of pieces its corpus
    merges into élevée, the token is not formed."""
    from tiny.tokenizer import train_tokenizer

    tok = train_tokenizer(['"confiance":"élevée" modérée ées'] * 50, vocab_size=400)
    pieces = tok.convert_ids_to_tokens(tok.encode("élevée", add_special_tokens=False))
    assert TOKEN not in pieces and "".join(pieces) == TOKEN
