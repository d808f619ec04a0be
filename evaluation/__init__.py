"""Latency and quality of the served models on both diagnostic bodies, their comparison, the gate.

    python -m scripts.benchmark --limit 50 --warmup 2
    python -m scripts.benchmark --target base=http://127.0.0.1:8001/v1,aria-base,bodies=seed,sets=eval \\
        --target sft=http://127.0.0.1:8002/v1,aria-ft-sft \\
        --target dpo=http://127.0.0.1:8003/v1,aria-ft-dpo,reports=40 --sweep 1,4,16
    python -m scripts.benchmark --resume 20250101-120000      # finish an interrupted run

Targets are OpenAI-compatible endpoints `ROLE=BASE_URL,SERVED_NAME[,KEY=VALUE...]` with
ROLE in base|sft|dpo (default: one target, role dpo, on VLLM_HOST:VLLM_PORT serving
VLLM_SERVED_NAME; the API key is VLLM_API_KEY). The optional KEY=VALUE fields narrow what one
target gets: `bodies=seed+project`, `sets=eval+outside`, `limit=N` (items per set, a seeded subset
of the run's items, the same for every target so that comparisons pair them), `reports=N`,
`orders=N` (items of the field-order passes below: the N lowest ranks of the target's first eval
set; 0: no field-order pass for this target).

`--field-orders` (off by default) also sends the project's body, on the first prompt, in each of
the five field orders other than the canonical one (aria.schema.FIELD_ORDERS): xgrammar writes the
properties in the schema's order, and any order must get a right, complete answer (issue 18).
Each order has its own records file, `...__<prompt>__project-<slug>.jsonl` with the slug the
keys' initials (`cjp` for confiance, justification, pathologie), and is asked the target's items
(or its `orders=N`); the canonical order's figures come from the project pass on the same items.
They are reported under `field_orders`, not gated.

Every diagnostic is sent with each body of `--bodies` (default both, DOMAIN.md): `seed`, the seed
README's body verbatim (free-string `pathologie`, properties pathologie, confiance,
justification), and `project`, the project's strict schema S. The eval sets are
data/eval/eval.jsonl and, when it exists, data/eval/outside.jsonl (runners drawn apart from the
training data), scored together and reported apart. Every finished request is appended at once to
reports/<run-id>/records/<role>-<served name>__<prompt>__<body>.jsonl (`__cold`/`__warmup`,
`__report` and `__sweep-c<N>` for the other passes), so `--resume RUN_ID` (or `--run-id RUN_ID`
again) skips what is done, per body, and loses nothing. The first request to each target is the
cold one, the next `--warmup N` warm the server up: both are recorded and reported apart, never in
the percentiles.

Outputs in reports/<run-id>/ (and reports/latest -> the newest run): summary.json, report.md and
PNG plots. summary.json (schema_version 2; version 1 had one body and one eval set) is written
through the pydantic models of aria.summary, which are its schema and which every reader uses:
RunSummary {run_id, started_at, finished_at, profile, eval, bodies, prompts, slo_ms, notes,
models [ModelSummary: one per target, every body under `bodies` (the first, `primary_body`, is
what cards and plots show), cold and warm-up latencies, report, sweep, field_orders (null without
--field-orders)], experiments, comparison, gate (passed is null when no production target could
be chosen)}.

exact_match compares the canonical string (a free-string answer must be exactly one of the six
labels); exact_match_lenient also accepts case, accent and SFP/SBIT variants (DOMAIN.md). A
diagnostic cut by max_tokens (finish_reason `length`) is invalid JSON and counts as wrong.

The last line printed is a one-line JSON summary. Exit codes: 0 gate passed (or no gate),
1 gate failed, 2 nothing measured (endpoint down, unknown served name, bad input or config).

The package, by job (vLLM's benchmarks split alike: transport, datasets, metrics, CLI):
config (flags, targets), inputs (eval sets, prompts), transport (the streaming client), scoring
(one record), records (records files, resume), passes (what each target is sent), summary (the
figures of summary.json; its schema is aria.summary), gate (release gate, comparison), report
(plots, report.md, console tables), runner (one run, `cli`). Beside the benchmark: soak (a
bounded soak of the live server), load (`vllm bench serve` sweeps through vllm_cli) and
guided_overhead (the cost of guided decoding).
"""
