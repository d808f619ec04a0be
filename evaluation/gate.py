"""The release gate and the comparison of the served models.

`load_gate` reads configs/release_gate.yaml; `release_gate` checks the production model on every
body and the serving memory; `compare` pairs base -> sft -> dpo with bootstrap deltas.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from aria import metrics
from aria.settings import Settings
from evaluation.config import SetupError
from evaluation.report import first_per_id
from serve.memory import serving_gate


def load_gate(path: Path, profile: str) -> dict:
    """The gate for `profile` from YAML ({bodies, thresholds, overridden}, see
    metrics.resolve_gate); raises SetupError naming the file and the problem."""
    if not path.exists():
        raise SetupError(f"{path} does not exist: pass --gate-config FILE")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return metrics.resolve_gate(doc, profile)
    except (yaml.YAMLError, ValueError, AttributeError) as e:
        raise SetupError(f"{path}: {e}") from None


def flat_metrics(summary: dict, cold_ms: float | None = None) -> dict[str, float | None]:
    """The gateable numbers of one body's diagnostic summary under flat names: its numeric
    fields, latency_p50_ms..., justification_grounded_rate (and code_trace, readable), and
    exact_match_<set> / json_valid_rate_<set> for each eval set."""
    flat = {
        k: v for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    for prefix in ("latency", "ttft"):
        for q in ("p50", "p95", "p99", "mean", "max"):
            flat[f"{prefix}_{q}_ms"] = (summary.get(f"{prefix}_ms") or {}).get(q)
    justification = summary.get("justification") or {}
    for name in ("grounded_rate", "code_trace_rate", "readable_rate"):
        flat[f"justification_{name}"] = justification.get(name)
    for name, part in (summary.get("per_set") or {}).items():
        for key in ("exact_match", "json_valid_rate", "cut_by_length_rate"):
            flat[f"{key}_{name}"] = part.get(key)
    flat["cold_ms"] = cold_ms
    return flat


def compare(models: list[dict], records: dict[tuple[str, str], list[dict]]) -> dict:
    """Winner, paired deltas base -> sft -> dpo with bootstrap CIs, and the seed's verdict.

    Each pair is compared on the first body of DIAGNOSTIC_BODIES that both measured, on the
    items both were asked (`records` maps (slug, body) to the first prompt's records).
    """
    by_role = {m["role"]: m for m in models}

    def common_body(a: dict, b: dict) -> str | None:
        return next((x for x in a["bodies"] if x in b["bodies"]), None)

    deltas = []
    for a, b in (("base", "sft"), ("sft", "dpo"), ("base", "dpo")):
        if a not in by_role or b not in by_role:
            continue
        body = common_body(by_role[a], by_role[b])
        if body is None:
            continue
        ra = {r["id"]: r for r in first_per_id(records[(by_role[a]["slug"], body)])}
        rb = {r["id"]: r for r in first_per_id(records[(by_role[b]["slug"], body)])}
        common = [i for i in ra if i in rb]
        hits_a = [float(ra[i]["scores"]["correct"]) for i in common]
        hits_b = [float(rb[i]["scores"]["correct"]) for i in common]
        sa, sb = by_role[a]["bodies"][body], by_role[b]["bodies"][body]
        deltas.append(
            {
                "from": a,
                "to": b,
                "body": body,
                "n_paired": len(common),
                "exact_match": metrics.paired_bootstrap_delta(hits_a, hits_b),
                "per_pathology": _group_deltas(sa["per_pathology"], sb["per_pathology"]),
                "per_slice": _group_deltas(sa["per_slice"], sb["per_slice"]),
            }
        )
    recommendation = None
    tuned = next((r for r in ("dpo", "sft") if r in by_role), None)
    body = common_body(by_role["base"], by_role[tuned]) if "base" in by_role and tuned else None
    if body and by_role["base"]["bodies"][body]["exact_match"] is not None:
        base_s, tuned_s = by_role["base"]["bodies"][body], by_role[tuned]["bodies"][body]
        gain = 100 * ((tuned_s["exact_match"] or 0) - base_s["exact_match"])
        band = metrics.recommendation_band(gain)
        verdict = {
            "effective": "fine-tuning is effective (gain above 10 points); the release gate decides whether it ships",
            "moderate": "fine-tuning is moderate (5 to 10 points): look at the weakest category",
            "insufficient": "fine-tuning is insufficient (below 5 points): revisit data or recipe",
        }[band]
        weakest = min(
            tuned_s["per_pathology"].items(),
            key=lambda kv: kv[1]["accuracy"],
            default=(None, None),
        )[0]
        text = f"{tuned} vs base ({body} body): {gain:+.1f} points of exact match; {verdict}."
        if weakest:
            text += f" Weakest pathology for {tuned}: {weakest}."
        recommendation = {
            "from": "base",
            "to": tuned,
            "body": body,
            "gain_points": gain,
            "band": band,
            "text": text,
        }
    # Roles are unique in a run while served names may repeat: the winner is named by its role.
    return {
        "winner": metrics.pick_winner([{**m, "name": m["role"]} for m in models]),
        "deltas": deltas,
        "recommendation": recommendation,
    }


def _group_deltas(a: dict, b: dict) -> dict[str, float]:
    return {k: b[k]["accuracy"] - a[k]["accuracy"] for k in b if k in a}


def release_gate(
    models: list[dict], gate_spec: dict, gate_config: Path, settings: Settings
) -> dict:
    """The gate of the production model (role dpo, or the only target): each body's figures
    against `gate_spec`, then the local server's serving memory; `passed` is None when no
    production target can be chosen."""
    production = next(
        (m for m in models if m["role"] == "dpo"), models[0] if len(models) == 1 else None
    )
    gate_head = {
        "config": str(gate_config),
        "profile": settings.aria_profile,
        "bodies": gate_spec["bodies"],
        "overridden": gate_spec["overridden"],
    }
    if production is None:
        gate = {
            "model": None,
            "role": None,
            **gate_head,
            "passed": None,
            "by_body": {},
            "checked": [],
            "failures": [],
            "reason": "several targets and none with role dpo",
        }
    else:
        measured = {
            body: flat_metrics(summary, production["cold_ms"])
            for body, summary in production["bodies"].items()
        }
        result = metrics.evaluate_gate_bodies(
            measured, gate_spec["thresholds"], gate_spec["bodies"]
        )
        gate = {"model": production["name"], "role": production["role"], **gate_head, **result}
        # The seed's serving memory < 10 GB, on our local server's process tree when there is one.
        serving = serving_gate(settings, production["base_url"], gate_config)
        for key in ("checked", "failures"):
            gate[key] += [
                {**c, "body": "serving", "message": f"[serving] {c['message']}"}
                for c in serving[key]
            ]
        gate["passed"] = gate["passed"] and serving["passed"] is not False
        gate["serving_memory"], gate["serving_note"] = serving["memory"], serving["note"]
    return gate
