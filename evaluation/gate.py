"""The release gate and the comparison of the served models.

    >>> from evaluation.gate import evaluate_gate
    >>> evaluate_gate({"exact_match": 0.62}, [{"metric": "exact_match", "op": ">=", "target": 0.8}])["passed"]
    False

Thresholds are {metric, op, target} checked on measured figures (`evaluate_gate`, per body in
`evaluate_gate_bodies`); `load_gate` reads configs/release_gate.yaml and its profile overrides
(`resolve_gate`); `release_gate` checks the production model on every body and the serving
memory of the local server (serve.memory measures it); `compare` pairs base -> sft -> dpo with
bootstrap deltas, names a winner and the fine-tuning verdict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from aria.metrics import paired_bootstrap_delta
from aria.prompts import DIAGNOSTIC_BODIES
from aria.settings import Settings
from evaluation.config import SetupError
from evaluation.report import first_per_id
from serve.memory import GpuMemoryUnmeasured, local_server_pid, serving_memory

# ---------------------------------------------------------------- thresholds

_OPS = {
    ">=": lambda measured, target: measured >= target,
    ">": lambda measured, target: measured > target,
    "<=": lambda measured, target: measured <= target,
    "<": lambda measured, target: measured < target,
}


def validate_gate(thresholds: Any) -> list[dict[str, Any]]:
    """Check a gate's thresholds (a list of {metric, op, target}); raises ValueError naming the entry."""
    if not isinstance(thresholds, list) or not thresholds:
        raise ValueError("the gate needs a non-empty list `thresholds` of {metric, op, target}")
    for i, t in enumerate(thresholds):
        if not isinstance(t, Mapping) or set(t) - {"metric", "op", "target", "why", "if_measured"}:
            raise ValueError(
                f"thresholds[{i}] must be a mapping with metric, op, target (+ why, if_measured)"
            )
        if not isinstance(t.get("if_measured", False), bool):
            raise ValueError(f"thresholds[{i}].if_measured must be true or false")
        if not isinstance(t.get("metric"), str):
            raise ValueError(
                f"thresholds[{i}].metric must be a metric name, got {t.get('metric')!r}"
            )
        if t.get("op") not in _OPS:
            raise ValueError(
                f"thresholds[{i}].op must be one of {', '.join(_OPS)}, got {t.get('op')!r}"
            )
        target = t.get("target")
        if isinstance(target, bool) or not isinstance(target, int | float):
            raise ValueError(f"thresholds[{i}].target must be a number, got {target!r}")
    return [dict(t) for t in thresholds]


def evaluate_gate(
    measured: Mapping[str, float | None], thresholds: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Compare measured metrics with the gate's thresholds.

    Returns {passed, checked, failures}; each failure names the metric, the op and target, the
    measured value, `by` (how far it is on the wrong side, in the metric's unit; None when the
    metric was not measured) and a one-line `message`. A metric not measured fails, unless its
    threshold says `if_measured: true` (a band of the rule with no runner in the sample).
    """
    checked: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for t in thresholds:
        metric, op, target = t["metric"], t["op"], float(t["target"])
        value = measured.get(metric)
        if value is None and t.get("if_measured"):
            ok, by = True, None
            message = f"{metric} was not measured (no item it applies to): not checked"
        elif value is None:
            ok, by = False, None
            message = f"{metric} was not measured (target {op} {target:g})"
        else:
            ok = _OPS[op](value, target)
            by = abs(value - target) if not ok else 0.0
            message = (
                f"{metric} = {value:.4g} meets {op} {target:g}"
                if ok
                else f"{metric} = {value:.4g} misses {op} {target:g} by {by:.4g}"
            )
        row = {"metric": metric, "op": op, "target": target, "measured": value, "passed": ok}
        checked.append(row | {"message": message})
        if not ok:
            failures.append(row | {"by": by, "message": message})
    return {"passed": not failures, "checked": checked, "failures": failures}


def resolve_gate(doc: Any, profile: str) -> dict[str, Any]:
    """The gate a run applies: {bodies, thresholds, overridden} from a gate config document.

    The document holds `thresholds` (applied to every body of `bodies`, default all of
    DIAGNOSTIC_BODIES) and optional `profiles: {profile: {thresholds: [...]}}`: for `profile`, an
    entry replaces the threshold on the same metric, or adds one. `overridden` lists the metrics a
    profile changed. Raises ValueError naming the entry at fault.
    """
    if not isinstance(doc, Mapping):
        raise ValueError("the gate config must be a mapping with `thresholds`")
    thresholds = validate_gate(doc.get("thresholds"))
    bodies = doc.get("bodies", list(DIAGNOSTIC_BODIES))
    if (
        not isinstance(bodies, list)
        or not bodies
        or any(b not in DIAGNOSTIC_BODIES for b in bodies)
    ):
        raise ValueError(
            f"`bodies` must be a non-empty list of {', '.join(DIAGNOSTIC_BODIES)}, got {bodies!r}"
        )
    profiles = doc.get("profiles") or {}
    if not isinstance(profiles, Mapping):
        raise ValueError("`profiles` must map a profile name to {thresholds: [...]}")
    overridden: list[str] = []
    override = profiles.get(profile)
    if override is not None:
        if not isinstance(override, Mapping):
            raise ValueError(f"profiles.{profile} must be a mapping with `thresholds`")
        for t in validate_gate(override.get("thresholds")):
            kept = [x for x in thresholds if x["metric"] != t["metric"]]
            thresholds = [*kept, t]
            overridden.append(t["metric"])
    return {"bodies": list(bodies), "thresholds": thresholds, "overridden": overridden}


def evaluate_gate_bodies(
    measured_by_body: Mapping[str, Mapping[str, float | None]],
    thresholds: Sequence[Mapping[str, Any]],
    bodies: Sequence[str],
) -> dict[str, Any]:
    """The gate over several diagnostic bodies: every threshold must hold on every body of
    `bodies`, and a body that was not measured fails.

    Returns {passed, by_body {body: passed}, checked, failures}; each row is evaluate_gate's with a
    `body` key and its message prefixed by `[body]`.
    """
    checked: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    by_body: dict[str, bool] = {}
    for body in bodies:
        measured = measured_by_body.get(body)
        if measured is None:
            message = f"[{body}] the {body} body was not measured (benchmark it: --bodies {body})"
            row = {"body": body, "metric": "body", "op": "measured", "target": None}
            row |= {"measured": None, "passed": False}
            checked.append(row | {"message": message})
            failures.append(row | {"by": None, "message": message})
            by_body[body] = False
            continue
        result = evaluate_gate(measured, thresholds)
        by_body[body] = result["passed"]
        checked += [
            {"body": body, **c, "message": f"[{body}] {c['message']}"} for c in result["checked"]
        ]
        failures += [
            {"body": body, **f, "message": f"[{body}] {f['message']}"} for f in result["failures"]
        ]
    return {"passed": not failures, "by_body": by_body, "checked": checked, "failures": failures}


# ---------------------------------------------------------------- the gate of a run


def load_gate(path: Path, profile: str) -> dict:
    """The gate for `profile` from YAML ({bodies, thresholds, overridden}, see
    resolve_gate); raises SetupError naming the file and the problem."""
    if not path.exists():
        raise SetupError(f"{path} does not exist: pass --gate-config FILE")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return resolve_gate(doc, profile)
    except (yaml.YAMLError, ValueError, AttributeError) as e:
        raise SetupError(f"{path}: {e}") from None


def flat_metrics(summary: dict, cold_ms: float | None = None) -> dict[str, float | None]:
    """The gateable numbers of one body's diagnostic summary under flat names: its numeric
    fields (whole_answer_rate among them), latency_p50_ms..., justification_grounded_rate (and
    code_trace, readable, crossings_right), exact_match_<set> / json_valid_rate_<set> /
    whole_answer_rate_<set> for each eval set, and per band of the rule (elevee, moderee, faible)
    confidence_rate_<band> (how often the model answered that band) and whole_answer_rate_<band>."""
    flat = {
        k: v for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    for prefix in ("latency", "ttft"):
        for q in ("p50", "p95", "p99", "mean", "max"):
            flat[f"{prefix}_{q}_ms"] = (summary.get(f"{prefix}_ms") or {}).get(q)
    justification = summary.get("justification") or {}
    for name in ("grounded_rate", "code_trace_rate", "readable_rate", "crossings_right_rate"):
        flat[f"justification_{name}"] = justification.get(name)
    for name, part in (summary.get("per_set") or {}).items():
        for key in ("exact_match", "json_valid_rate", "cut_by_length_rate", "whole_answer_rate"):
            flat[f"{key}_{name}"] = part.get(key)
        for band, row in (part.get("per_confidence") or {}).items():
            flat[f"confidence_rate_{ascii_band(band)}_{name}"] = row.get("confidence_rate")
    for band, row in (summary.get("per_confidence") or {}).items():
        flat[f"confidence_rate_{ascii_band(band)}"] = row.get("confidence_rate")
        flat[f"whole_answer_rate_{ascii_band(band)}"] = row.get("whole_answer_rate")
    flat["cold_ms"] = cold_ms
    return flat


def ascii_band(band: str) -> str:
    """A confidence band as a metric name's suffix: élevée → elevee."""
    import unicodedata

    return unicodedata.normalize("NFKD", band).encode("ascii", "ignore").decode()


def serving_thresholds(gate_doc: Any) -> list[dict[str, Any]]:
    """The gate's `serving` thresholds (on `serving_memory_gb`), validated like the others."""
    if not isinstance(gate_doc, dict) or not gate_doc.get("serving"):
        return []
    return validate_gate(gate_doc["serving"])


def evaluate_serving_gate(
    memory: dict[str, Any] | None, thresholds: list[dict[str, Any]]
) -> dict[str, Any]:
    """The serving thresholds checked on the measured figure: {passed, checked, failures, note}.

    Where no figure exists (no local server process: a remote endpoint), nothing is checked and
    `passed` is None with a note saying why; a measured figure is always checked.
    """
    if not thresholds:
        return {"passed": None, "checked": [], "failures": [], "note": "no serving threshold"}
    if memory is None:
        return {
            "passed": None,
            "checked": [],
            "failures": [],
            "note": "serving memory not measured: no local server process (data/run/vllm-<port>.pid)",
        }
    result = evaluate_gate({"serving_memory_gb": memory["gb"]}, thresholds)
    return {**result, "note": f"{memory['source']} of pid {memory['pid']}'s process tree"}


def serving_gate(settings: Settings, base_url: str, gate_path: Path) -> dict[str, Any]:
    """Measure the server behind `base_url` and check the gate's `serving` thresholds on it:
    {memory (serving_memory's dict or None), passed, checked, failures, note}."""
    from serve.command import detect_engine

    thresholds = serving_thresholds(yaml.safe_load(gate_path.read_text(encoding="utf-8")))
    pid = local_server_pid(settings, base_url)
    try:
        memory = serving_memory(pid, detect_engine()) if pid is not None else None
    except GpuMemoryUnmeasured as error:
        return {"memory": None, **unmeasured_serving_gate(str(error), thresholds)}
    return {"memory": memory, **evaluate_serving_gate(memory, thresholds)}


def unmeasured_serving_gate(reason: str, thresholds: list[dict[str, Any]]) -> dict[str, Any]:
    """The serving thresholds failed, each naming `reason`: a GPU server whose memory could not be
    measured is not let through on a guess."""
    result = evaluate_gate({"serving_memory_gb": None}, thresholds)
    for row in result["checked"] + result["failures"]:
        row["message"] = f"{row['message']}: {reason}"
    return {**result, "note": reason}


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
        result = evaluate_gate_bodies(measured, gate_spec["thresholds"], gate_spec["bodies"])
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


# ---------------------------------------------------------------- comparison


def recommendation_band(gain_points: float) -> str:
    """The fine-tuning verdict of a gain in percentage points of exact match.

    `effective` above 10 points, `moderate` from 5 to 10 inclusive, `insufficient` below 5.
    """
    if gain_points > 10:
        return "effective"
    if gain_points >= 5:
        return "moderate"
    return "insufficient"


def pick_winner(models: Sequence[Mapping[str, Any]]) -> str | None:
    """The name of the best model: highest exact match, then JSON-valid rate, then lowest P50.

    Each model is a dict with `name`, `exact_match`, `json_valid_rate` and `latency_ms.p50`;
    a model with no exact match (nothing answered) cannot win.
    """
    candidates = [m for m in models if m.get("exact_match") is not None]
    if not candidates:
        return None

    def key(m: Mapping[str, Any]) -> tuple[float, float, float]:
        p50 = (m.get("latency_ms") or {}).get("p50")
        return (
            -round(m["exact_match"], 6),
            -round(m.get("json_valid_rate") or 0.0, 6),
            p50 if p50 is not None else math.inf,
        )

    return min(candidates, key=key)["name"]


def _common_body(a: dict, b: dict) -> str | None:
    """The first body of DIAGNOSTIC_BODIES (the order of `bodies`) both models measured."""
    return next((x for x in a["bodies"] if x in b["bodies"]), None)


def paired_deltas(
    by_role: dict[str, dict], records: dict[tuple[str, str], list[dict]]
) -> list[dict]:
    """base -> sft, sft -> dpo, base -> dpo among the roles present: exact match's paired
    bootstrap delta on the items both were asked, and the per-pathology and per-slice deltas."""
    deltas = []
    for a, b in (("base", "sft"), ("sft", "dpo"), ("base", "dpo")):
        if a not in by_role or b not in by_role:
            continue
        body = _common_body(by_role[a], by_role[b])
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
                "exact_match": paired_bootstrap_delta(hits_a, hits_b),
                "per_pathology": _group_deltas(sa["per_pathology"], sb["per_pathology"]),
                "per_slice": _group_deltas(sa["per_slice"], sb["per_slice"]),
            }
        )
    return deltas


_VERDICTS = {
    "effective": "fine-tuning is effective (gain above 10 points); the release gate decides whether it ships",
    "moderate": "fine-tuning is moderate (5 to 10 points): look at the weakest category",
    "insufficient": "fine-tuning is insufficient (below 5 points): revisit data or recipe",
}


def recommendation(by_role: dict[str, dict]) -> dict | None:
    """The fine-tuning verdict: the tuned model (dpo, else sft) against the base on the first
    body both measured, with its weakest pathology; None without both or a base figure."""
    tuned = next((r for r in ("dpo", "sft") if r in by_role), None)
    body = _common_body(by_role["base"], by_role[tuned]) if "base" in by_role and tuned else None
    if not body or by_role["base"]["bodies"][body]["exact_match"] is None:
        return None
    base_s, tuned_s = by_role["base"]["bodies"][body], by_role[tuned]["bodies"][body]
    gain = 100 * ((tuned_s["exact_match"] or 0) - base_s["exact_match"])
    band = recommendation_band(gain)
    weakest = min(
        tuned_s["per_pathology"].items(), key=lambda kv: kv[1]["accuracy"], default=(None, None)
    )[0]
    text = f"{tuned} vs base ({body} body): {gain:+.1f} points of exact match; {_VERDICTS[band]}."
    if weakest:
        text += f" Weakest pathology for {tuned}: {weakest}."
    return {
        "from": "base",
        "to": tuned,
        "body": body,
        "gain_points": gain,
        "band": band,
        "text": text,
    }


def compare(models: list[dict], records: dict[tuple[str, str], list[dict]]) -> dict:
    """Winner, paired deltas base -> sft -> dpo with bootstrap CIs, and the seed's verdict.

    Each pair is compared on the first body of DIAGNOSTIC_BODIES that both measured, on the
    items both were asked (`records` maps (slug, body) to the first prompt's records); the
    winner is chosen on each model's primary body.
    """
    by_role = {m["role"]: m for m in models}
    # Roles are unique in a run while served names may repeat: the winner is named by its role.
    primaries = [{**m["bodies"][m["primary_body"]], "name": m["role"]} for m in models]
    return {
        "winner": pick_winner(primaries),
        "deltas": paired_deltas(by_role, records),
        "recommendation": recommendation(by_role),
    }


def _group_deltas(a: dict, b: dict) -> dict[str, float]:
    return {k: b[k]["accuracy"] - a[k]["accuracy"] for k in b if k in a}
