"""The Hugging Face model card of a trained stage, rendered from the typed benchmark summary.

    >>> from aria.cards import render_model_card
    >>> text = render_model_card(profile="tiny", stage="aria-ft-dpo", base_model="data/models/tiny/base",
    ...                          summary=None, recipes={})
    >>> text.startswith("---")
    True

Pure: no file is read here. `publishing.generate_model_card` reads reports/latest/summary.json
(aria.summary.read_summary), the recipe YAML files and the tiny base's parameter count and hands
them over, so every branch is unit-tested without files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from aria.domain import EXAMPLE_MEASUREMENTS
from aria.metrics import as_percent
from aria.prompts import diagnostic_request, report_request
from aria.settings import MEDGEMMA_HUB_ID
from aria.summary import STAGE_ROLES, ModelSummary, RunSummary

# The terms MedGemma is distributed under; a derived model stays under them.
HAI_DEF_LICENSE_NAME = "health-ai-developer-foundations"
HAI_DEF_LICENSE_LINK = "https://developers.google.com/health-ai-developer-foundations/terms"
MODEL_TAGS: tuple[str, ...] = (
    "medgemma",
    "gemma3",
    "qlora",
    "dpo",
    "trl",
    "peft",
    "vllm",
    "biomechanics",
    "running",
    "fr",
)
STAGE_SUMMARIES: dict[str, str] = {
    "aria-ft-sft": "supervised fine-tuning (SFT, QLoRA NF4) merged to bf16: the validation model",
    "aria-ft-dpo": "SFT followed by DPO (QLoRA NF4) merged to bf16: the production model",
}
# Which recipe files describe a stage: DPO starts from the merged SFT model, so it shows both.
STAGE_RECIPES: dict[str, tuple[str, ...]] = {
    "aria-ft-sft": ("sft",),
    "aria-ft-dpo": ("sft", "dpo"),
}
# Recipe keys worth a readable name, in the order a reader looks for them; others follow as-is.
RECIPE_KEY_LABELS: dict[str, str] = {
    "model_name_or_path": "starting model",
    "dtype": "compute dtype",
    "load_in_4bit": "4-bit base (QLoRA)",
    "bnb_4bit_quant_type": "4-bit quantisation",
    "use_bnb_nested_quant": "double quantisation",
    "bnb_4bit_use_double_quant": "double quantisation",
    "lora_r": "LoRA r",
    "r": "LoRA r",
    "lora_alpha": "LoRA alpha",
    "lora_dropout": "LoRA dropout",
    "lora_target_modules": "LoRA target modules",
    "target_modules": "LoRA target modules",
    "learning_rate": "learning rate",
    "lr_scheduler_type": "LR schedule",
    "warmup_ratio": "warm-up ratio",
    "warmup_steps": "warm-up steps (a ratio when < 1)",
    "weight_decay": "weight decay",
    "max_steps": "steps",
    "num_train_epochs": "epochs",
    "per_device_train_batch_size": "batch size per device",
    "gradient_accumulation_steps": "gradient accumulation",
    "beta": "DPO beta",
    "loss_type": "DPO loss",
    "max_length": "max sequence length",
    "completion_only_loss": "loss on the completion only",
    "bf16": "bf16",
    "gradient_checkpointing": "gradient checkpointing",
    "seed": "seed",
}


def stage_result(summary: RunSummary | None, stage: str) -> ModelSummary | None:
    """The benchmark entry of `stage`: matched on its served name, then its role; None if absent."""
    if summary is None:
        return None
    return summary.model_for(stage, STAGE_ROLES.get(stage))


def flatten_recipe(recipe: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A recipe as flat `dotted.key -> value` pairs, nested sections included."""
    flat: dict[str, Any] = {}
    for key, value in recipe.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_recipe(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def recipe_rows(recipe: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(readable name, key, value) for every key the recipe sets; well-known keys first."""
    flat = flatten_recipe(recipe)
    order = list(RECIPE_KEY_LABELS)

    def rank(key: str) -> tuple[int, str]:
        leaf = key.rsplit(".", 1)[-1]
        return (order.index(leaf) if leaf in order else len(order), key)

    rows = []
    for key in sorted(flat, key=rank):
        leaf = key.rsplit(".", 1)[-1]
        rows.append((RECIPE_KEY_LABELS.get(leaf, leaf), key, _format_setting(flat[key])))
    return rows


def _format_setting(value: Any) -> str:
    """A recipe value as table text; lists joined, None shown as 'unset'."""
    if value is None:
        return "unset"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def _millis(value: float | None) -> str:
    """A latency in ms, or an em dash when the benchmark did not report it."""
    return "—" if value is None else f"{value:.0f}"


def eval_results(result: ModelSummary | None, dataset_repo: str | None) -> list[EvalResult]:
    """The model-index entries of one benchmarked model (its primary body): exact match, JSON
    validity, latency."""
    if result is None:
        return []
    figures = result.primary
    common = {
        "task_type": "text-generation",
        "task_name": "Running-injury diagnostic (guided JSON)",
        "dataset_type": dataset_repo or "aria-eval",
        "dataset_name": "ARIA held-out evaluation set",
        "dataset_split": "eval",
    }
    metrics: list[tuple[str, str, float | None]] = [
        ("exact_match", "Pathology exact match (%)", _scaled(figures.exact_match, 100)),
        ("json_valid_rate", "JSON valid (%)", _scaled(figures.json_valid_rate, 100)),
    ]
    for p in ("p50", "p95", "p99"):
        value = getattr(figures.latency_ms, p)
        metrics.append((f"latency_{p}_ms", f"Diagnostic latency {p.upper()} (ms)", value))
    return [
        EvalResult(metric_type=kind, metric_name=name, metric_value=value, **common)
        for kind, name, value in metrics
        if value is not None
    ]


def _scaled(value: float | None, factor: float) -> float | None:
    """value * factor rounded to 2 decimals, or None when the benchmark did not report it."""
    return None if value is None else round(value * factor, 2)


def card_metadata(
    *,
    profile: str,
    stage: str,
    result: ModelSummary | None,
    dataset_repo: str | None,
    model_repo: str | None,
) -> ModelCardData:
    """The YAML metadata block: base model, licence, language, tags, datasets and model-index."""
    medgemma = profile == "medgemma"
    results = eval_results(result, dataset_repo)
    return ModelCardData(
        # The tiny base is built locally, so it has no Hub id to point to.
        base_model=MEDGEMMA_HUB_ID if medgemma else None,
        license="other" if medgemma else "apache-2.0",
        license_name=HAI_DEF_LICENSE_NAME if medgemma else None,
        license_link=HAI_DEF_LICENSE_LINK if medgemma else None,
        language=["fr"],
        library_name="transformers",
        pipeline_tag="image-text-to-text" if medgemma else "text-generation",
        tags=list(MODEL_TAGS),
        datasets=[dataset_repo] if dataset_repo else None,
        model_name=model_repo or f"aria-{profile}-{stage}",
        eval_results=results or None,
    )


def _benchmark_section(summary: RunSummary | None, stage: str) -> list[str]:
    """Markdown of the latest benchmark: every model served, this stage marked, the gate, and
    when the figures were measured."""
    if summary is None or not summary.models:
        return [
            "No benchmark yet: run `make benchmark` (with the model served by `make serve-ft`), "
            "then `make model-card` again."
        ]
    lines = [
        "| model | role | exact match | JSON valid | P50 (ms) | P95 (ms) | P99 (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    this = stage_result(summary, stage)
    for m in summary.models:
        name = f"**{m.name}** (this model)" if m is this else m.name
        figures, latency = m.primary, m.primary.latency_ms
        lines.append(
            f"| {name} | {m.role} | {as_percent(figures.exact_match)} "
            f"| {as_percent(figures.json_valid_rate)} | {_millis(latency.p50)} "
            f"| {_millis(latency.p95)} | {_millis(latency.p99)} |"
        )
    lines.append("")
    gate = summary.gate
    checked = [c.message for c in gate.checked]
    failures = [f.message for f in gate.failures]
    if gate.passed is True:
        lines.append("Release gate: **passed**" + (":" if checked else "."))
        lines += [f"- {c}" for c in checked]
    elif gate.passed is False:
        lines.append("Release gate: **failed**" + (":" if failures else "."))
        lines += [f"- {f}" for f in failures]
    else:
        lines.append("Release gate: not evaluated in this report.")
    lines.append("")
    lines.append(
        f"Figures measured on {summary.finished_at[:10]} (benchmark run {summary.run_id}, "
        f"finished {summary.finished_at}, `reports/latest/summary.json`); reproduce them with "
        "`make benchmark`."
    )
    if this is None:
        lines += ["", f"This report has no entry for `{stage}`: serve it and run `make benchmark`."]
    return lines


def _recipe_section(stage: str, recipes: Mapping[str, Mapping[str, Any] | None]) -> list[str]:
    """Markdown tables of the recipe files that produced `stage`, with every key they set."""
    lines: list[str] = []
    for name in STAGE_RECIPES[stage]:
        recipe = recipes.get(name)
        lines += [f"### {name.upper()}", ""]
        if not recipe:
            lines += [f"Recipe `{name}.yaml` not found for this profile.", ""]
            continue
        lines += ["| setting | key | value |", "|---|---|---|"]
        lines += [f"| {label} | `{key}` | {value} |" for label, key, value in recipe_rows(recipe)]
        lines.append("")
    return lines


def _calls_section(served_name: str) -> list[str]:
    """The two calls the downstream service makes, with their exact bodies."""
    diagnostic = diagnostic_request(EXAMPLE_MEASUREMENTS, served_name)
    report = report_request(EXAMPLE_MEASUREMENTS, served_name)
    return [
        "Serve the model with vLLM (`make serve-ft`) and call its OpenAI-compatible endpoint",
        "`POST /v1/chat/completions`. Gemma has no system role: each call is one user turn.",
        "",
        "**1. Diagnostic, guided JSON** (temperature "
        f"{diagnostic['temperature']}, max_tokens {diagnostic['max_tokens']}, `response_format` "
        "json_schema: the answer always parses):",
        "",
        "```json",
        json.dumps(diagnostic, ensure_ascii=False, indent=2),
        "```",
        "",
        f"**2. Report, free French text** (temperature {report['temperature']}, "
        f"max_tokens {report['max_tokens']}, no `response_format`):",
        "",
        "```json",
        json.dumps(report, ensure_ascii=False, indent=2),
        "```",
        "",
        "In Python, `aria.prompts.diagnostic_request(measurements, model)` and "
        "`report_request(measurements, model)` build these bodies from a dict of measurements. "
        "Build the prompt with them rather than by hand: the model was trained on their table, "
        "which lists the measurements from the largest percentage of threshold to the smallest.",
    ]


# The card's "Intended use and limits" section, the same for every stage and profile.
INTENDED_USE = (
    "- Research use only. This model is **not a medical device**: it does not diagnose, "
    "treat or replace a clinician, and its output must not drive care decisions on its own.",
    "- It reproduces a fixed, documented rule over seven measurements (thresholds on trunk "
    "lean, knee valgus, hip adduction, stride length, foot pronation, heel strike and "
    "dorsiflexion); it knows nothing a measurement does not show.",
    "- Inputs outside the physical ranges of the measurements are out of scope; validate them "
    "with `aria.domain.validate_measurements` before calling.",
    "- The report call is free text at temperature 0.3: check that every number it cites "
    "comes from the input.",
)


def _origin_and_licence(
    profile: str, base_model: str, base_parameters: int | None
) -> tuple[str, str]:
    """Where the model comes from and the terms it is under: MedGemma's, or the tiny model's."""
    if profile == "medgemma":
        origin = f"Fine-tuned from [`{MEDGEMMA_HUB_ID}`](https://huggingface.co/{MEDGEMMA_HUB_ID})."
        licence = (
            f"The base model `{MEDGEMMA_HUB_ID}` is subject to the Health AI Developer Foundations "
            f"terms of use ({HAI_DEF_LICENSE_LINK}); this derived model is distributed under the "
            "same terms, and using it means accepting them. The ARIA code is Apache-2.0."
        )
        return origin, licence
    size = f"{base_parameters:,}-parameter" if base_parameters else "small"
    origin = (
        f"Trained from `{base_model}`: the *tiny* profile, a {size} Gemma 3 built "
        "locally from a config with a tokenizer learned on our data, then pretrained on "
        "copying values from its prompt (`make tiny-pretrain`; `make tiny-model` installs "
        "it). It exists to run the whole chain on a CPU in minutes; it is not a medical model."
    )
    return origin, "The tiny model and the ARIA code are Apache-2.0; no MedGemma weight is used."


def render_model_card(
    *,
    profile: str,
    stage: str,
    base_model: str,
    summary: RunSummary | None,
    recipes: Mapping[str, Mapping[str, Any] | None],
    dataset_repo: str | None = None,
    model_repo: str | None = None,
    served_name: str = "aria-ft",
    base_parameters: int | None = None,
) -> str:
    """The README.md of a stage folder: YAML metadata that the Hub parses, then the card's body.

    `summary` is reports/latest/summary.json (None when no benchmark ran); `recipes` maps `sft` /
    `dpo` to the recipe YAML dicts of the profile (missing ones are reported); `base_parameters`
    is the tiny base's parameter count (its aria_build.json), said in the card when known.
    """
    if stage not in STAGE_SUMMARIES:
        raise ValueError(
            f"no model card for stage {stage!r}; expected {', '.join(STAGE_SUMMARIES)}"
        )
    result = stage_result(summary, stage)
    data = card_metadata(
        profile=profile,
        stage=stage,
        result=result,
        dataset_repo=dataset_repo,
        model_repo=model_repo,
    )
    title = model_repo or f"aria-{stage}"
    origin, licence = _origin_and_licence(profile, base_model, base_parameters)
    dataset_line = (
        f"Training data: [`{dataset_repo}`](https://huggingface.co/datasets/{dataset_repo})."
        if dataset_repo
        else "Training data: `data/training/{sft,dpo}.jsonl`, generated by `make datasets`."
    )
    body = [
        f"# {title}",
        "",
        f"ARIA `{stage}` ({profile} profile): {STAGE_SUMMARIES[stage]}. Given seven "
        "biomechanical measurements of a runner, it names the most likely running injury among "
        "six, with a confidence band and a one-line justification, or writes a French report.",
        "",
        origin,
        "",
        dataset_line,
        "",
        "## Intended use and limits",
        "",
        *INTENDED_USE,
        "",
        "## How to call it",
        "",
        *_calls_section(served_name),
        "",
        "## Latest benchmark",
        "",
        *_benchmark_section(summary, stage),
        "",
        "## Training recipe",
        "",
        "QLoRA NF4 adapters trained with TRL and PEFT, merged into a bf16 copy of the base (never "
        "into the 4-bit one). Values below are read from the recipe files "
        f"`training/recipes/{profile}/*.yaml` (`make train-sft`, `make train-dpo`).",
        "",
        *_recipe_section(stage, recipes),
        "## Licence",
        "",
        licence,
        "",
    ]
    content = f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body)
    # Parsing it back proves the metadata block is valid before anyone pushes it.
    return str(ModelCard(content))
