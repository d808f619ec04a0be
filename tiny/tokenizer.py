"""The tiny base's tokenizer: a byte-level BPE trained on our dataset text, with Gemma 3's chat template.

Every text encodes (all 256 bytes are in the vocabulary); digits are split one per token so that
numbers are read digit by digit; each measurement key is one token; Gemma's special tokens keep
Gemma's ids for pad/eos/bos/unk, and the chat template is Gemma 3's (text parts only). `tiny.build`
trains it for the tiny base; `training.bench_training` trains one on a line of text as the
stand-in tokenizer of a config-only model.
"""

from __future__ import annotations

import json
from pathlib import Path

from aria.files import DataError, read_jsonl
from training.model_files import END_OF_TURN

# Gemma's special tokens, with Gemma's ids for pad/eos/bos/unk (the Gemma 3 config defaults).
SPECIAL_TOKENS: tuple[str, ...] = (
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<start_of_turn>",
    END_OF_TURN,
)
VOCAB_SIZE = 2048
# The pre-tokenizer's word split: GPT-2's regular expression with `_` counted as a letter.
WORD_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?[\p{L}_]+| ?\p{N}+| ?[^\s\p{L}\p{N}_]+|\s+(?!\S)|\s+"
# Serving defaults to VLLM_MAX_MODEL_LEN=4096; vLLM refuses a length above the model's positions.
MAX_POSITIONS = 4096

# Gemma 3's chat template, as shipped with transformers' Gemma 3 tokenizers (text parts only).
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    '    {%- set first_user_prefix = "" -%}\n'
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    '        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}\n'
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    '        {%- set role = "model" -%}\n'
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    '        {{ raise_exception("Invalid content type") }}\n'
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\n'}}\n"
    "{%- endif -%}\n"
)


def dataset_texts(sft_path: Path) -> list[str]:
    """Every message text of the SFT dataset (prompts and completions): the tokenizer's corpus."""
    if not Path(sft_path).exists():
        raise SystemExit(
            f"{sft_path} does not exist: the tokenizer is trained on our dataset text; "
            "run `make datasets` first"
        )
    texts: list[str] = []
    for record in read_jsonl(sft_path):
        for field in ("prompt", "completion", "messages"):
            for message in record.get(field) or []:
                if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                    raise DataError(f"{sft_path}: '{field}' must be a list of chat messages")
                texts.append(message["content"])
    if not texts:
        raise DataError(f"{sft_path}: no prompt/completion text to train the tokenizer on")
    return texts


# Tokens the tokenizer never forms (the merges that would make them are left out), so that the
# model writes these words in tokens that guided decoding allows. xgrammar (0.2.8, 0.2.9) leaves
# some valid tokens out of its token mask: `Ã©levÃ©e` (`élevée`, beside `Ã©e`) was never allowed,
# and the served model answered `modérée` where it meant `élevée` (`python -m serve.grammar_audit`
# finds such tokens; docs/serving.md). Without it, `élevée` is `Ã©` + `levÃ©e`, which the mask
# allows. Named by the token, not the merge: a tokenizer trained on other text may reach it by
# another pair.
UNMERGED: tuple[str, ...] = ("Ã©levÃ©e",)


def without_merges(tok, tokens: tuple[str, ...] = UNMERGED, *, missing_ok: bool = False):
    """The `tokenizers.Tokenizer` `tok` without the BPE merges that form `tokens` (its vocabulary
    and ids unchanged: those tokens stay, unused). A token no merge forms is an error, unless
    `missing_ok` (a freshly trained tokenizer need not have learnt it)."""
    from tokenizers import Tokenizer

    spec = json.loads(tok.to_str())
    held = [
        tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in spec["model"]["merges"]
    ]
    formed = {"".join(m) for m in held}
    missing = [t for t in tokens if t not in formed]
    if missing and not missing_ok:
        raise ValueError(f"no merge of the tokenizer forms {missing}: nothing to leave out")
    spec["model"]["merges"] = [list(m) for m in held if "".join(m) not in tokens]
    return Tokenizer.from_str(json.dumps(spec, ensure_ascii=False))


def train_tokenizer(texts: list[str], vocab_size: int = VOCAB_SIZE):
    """A byte-level BPE with one token per digit and per key, as a transformers fast tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            # GPT-2's word split, with `_` inside words: each measurement key (`valgus_genou`)
            # becomes one token, where the stock split made three to five. Prompts are 10 %
            # shorter.
            pre_tokenizers.Split(Regex(WORD_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        # All 256 bytes are in the vocabulary, so any text (any language, any symbol) encodes.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok = without_merges(tok, missing_ok=True)
    bos_id = tok.token_to_id("<bos>")
    # Like Gemma's tokenizer: plain encoding starts with <bos>; the chat template writes its own.
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos_id)]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<start_of_turn>", END_OF_TURN],
        model_max_length=MAX_POSITIONS,
        padding_side="left",
    )
    wrapped.chat_template = GEMMA3_CHAT_TEMPLATE
    return wrapped
