"""Render data/training/README.md, the Hugging Face dataset card of the ARIA datasets.

    python -m preparation.generate_dataset_card          # make dataset-card (after make datasets)

The card's YAML metadata (language, license, task categories, tags, size category, one config per
file) comes from huggingface_hub's DatasetCardData; its body gives the counts per label, split,
slice and confidence, how the data were generated (the rule, the seed, the command) and the limits.
`render_dataset_card` is pure (stats in, Markdown out); `main` reads and validates the files and
writes the card atomically. The card assumes the Hub repository holds sft.jsonl, dpo.jsonl and
eval.jsonl at its root, next to this README.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aria.domain import (
    CONFIDENCES,
    HIGH_CONFIDENCE_MIN_EXCEEDANCE,
    MODERATE_CONFIDENCE_MIN_EXCEEDANCE,
    PATHOLOGIES,
    RULES,
)
from aria.files import DataError, atomic_write_text, read_jsonl
from aria.logs import setup_logging
from aria.population import SLICES
from aria.records import VALIDATORS, dataset_stats
from aria.settings import Settings, get_settings

log = logging.getLogger(__name__)

# Paths of the files inside the Hub dataset repository (configs' data_files).
HUB_FILES: dict[str, tuple[str, str]] = {
    "sft": ("train", "training/sft.jsonl"),
    "sft_extended": ("train", "training/sft_extended.jsonl"),
    "dpo": ("train", "training/dpo.jsonl"),
    "eval": ("test", "eval/eval.jsonl"),
}
SPLIT_NAMES = {
    "sft_diagnostic": "SFT diagnostic",
    "sft_report": "SFT rapport",
    "dpo": "DPO",
    "eval": "éval",
}


@dataclass
class CardConfig:
    """Where the datasets are and the license the card declares."""

    data_dir: Path | None = None  # default: settings.aria_data_dir
    license: str = "apache-2.0"
    pretty_name: str = "ARIA – diagnostics de blessures de course (synthétique)"


def size_category(n: int) -> str:
    """The Hub's size_categories bucket of `n` records."""
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return name
    return "100K<n<1M"


def _fr(x: float) -> str:
    """A decimal number the French way (comma)."""
    return f"{x:.2f}".replace(".", ",")


def _table(rows: list[str], columns: dict[str, str], counts: dict[str, dict[str, int]]) -> str:
    head = "| | " + " | ".join(columns.values()) + " |"
    sep = "|---|" + "---:|" * len(columns)
    body = [f"| {r} | " + " | ".join(str(counts[c][r]) for c in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def _rule_lines() -> str:
    lines = []
    for rule in RULES:
        signals = " ET ".join(f"`{key}` > {t:g}" for key, t in rule.thresholds)
        lines.append(f"| {rule.pathology} | {signals} |")
    return "\n".join(["| pathologie | signal |", "|---|---|", *lines])


def render_dataset_card(
    stats: dict[str, Any], cfg: CardConfig | None = None, generation: dict | None = None
) -> str:
    """The full README.md (YAML front matter + Markdown) for `stats` from aria.records.dataset_stats."""
    from huggingface_hub import DatasetCard

    cfg = cfg or CardConfig()
    generation = generation or stats.get("generation") or {}
    total = sum(stats["records"].values())
    body = CARD_BODY.format(
        pretty_name=cfg.pretty_name,
        n_sft=stats["records"]["sft"],
        n_dpo=stats["records"]["dpo"],
        n_eval=stats["records"]["eval"],
        total=total,
        label_table=_table(list(PATHOLOGIES), SPLIT_NAMES, stats["label"]),
        slice_table=_table(list(SLICES), SPLIT_NAMES, stats["slice"]),
        confidence_table=_table(list(CONFIDENCES), SPLIT_NAMES, stats["confidence"]),
        kinds=", ".join(f"`{k}` {n}" for k, n in stats["rejection_kind"].items()),
        rule_lines=_rule_lines(),
        high=_fr(HIGH_CONFIDENCE_MIN_EXCEEDANCE),
        moderate=_fr(MODERATE_CONFIDENCE_MIN_EXCEEDANCE),
        how=_how_generated(generation),
    )
    return str(DatasetCard(f"---\n{_card_data(cfg, total).to_yaml()}\n---\n{body}"))


def _card_data(cfg: CardConfig, total: int):
    """The card's YAML metadata: language, licence, size, the Hub's dataset configs."""
    from huggingface_hub import DatasetCardData

    return DatasetCardData(
        language="fr",
        license=cfg.license,
        pretty_name=cfg.pretty_name,
        task_categories=["text-generation"],
        size_categories=[size_category(total)],
        tags=["medical", "sports", "running", "biomechanics", "synthetic", "sft", "dpo"],
        configs=[
            {"config_name": name, "data_files": [{"split": split, "path": path}]}
            for name, (split, path) in HUB_FILES.items()
        ],
    )


def _how_generated(generation: dict) -> str:
    """How the files were made: the generation command and its seed, or the import."""
    if "command" in generation:
        return (
            f"Commande : `{generation['command']}` (graine `{generation['seed']}`). "
            "La même commande redonne les mêmes fichiers, octet pour octet."
        )
    if "imported_from" in generation:
        return "Importé avec `make copy-datasets` et validé ligne à ligne par les mêmes règles."
    return "Commande : `make datasets`."


# The card's body in French; render_dataset_card fills in the figures.
CARD_BODY = """
# {pretty_name}

Données synthétiques pour apprendre à un petit modèle de langue à diagnostiquer une blessure de
course à pied à partir de sept mesures biomécaniques, et à rédiger un rapport en français.
{n_sft} exemples SFT, {n_dpo} triplets DPO et \
{n_eval} profils d'évaluation ({total} au total).

## Fichiers

| config | fichier | format |
|---|---|---|
| `sft` | `sft.jsonl` | TRL *prompt-completion* conversationnel (`prompt`, `completion`, `kind` diagnostic ou report) |
| `sft_extended` | `sft_extended.jsonl` | `sft.jsonl` suivi d'exemples supplémentaires (diagnostics et rapports), surtout des cas difficiles, la moitié avec des mesures tirées indépendamment (le profil `tiny` s'entraîne dessus) |
| `dpo` | `dpo.jsonl` | TRL préférences (`prompt`, `chosen`, `rejected`, `rejection_kind`) |
| `eval` | `eval.jsonl` | `id`, `profile`, `label`, `confidence`, `slice` (jamais vus à l'entraînement) |

Chaque enregistrement garde son `profile` (les mesures, et le contexte quand le prompt le montre :
la moitié des rapports n'en ont pas), son `label`, sa `confidence` et sa `slice`.

## Répartition par pathologie

{label_table}

## Répartition par tranche

`clear` : une règle se déclenche nettement ; `near_threshold` : la valeur décisive est à quelques %
de son seuil, juste au-dessus ou juste en dessous ; `two_rules` : deux règles se déclenchent, le
plus grand dépassement l'emporte ; `none_fire` : aucune règle ne se déclenche.

{slice_table}

## Répartition par confiance

{confidence_table}

Erreurs des réponses rejetées (DPO) : {kinds}.

## Génération

Les profils sont tirés d'une population réaliste de coureurs (`aria.population`) : longueur de pas
≈ vitesse / cadence, attaque talon plus marquée chez les coureurs qui allongent la foulée, valgus du
genou et adduction de hanche plus élevés en moyenne chez les femmes, volume hebdomadaire corrélé à
la vitesse, âge de 18 à 70 ans. Chaque valeur est arrondie avant d'être étiquetée. L'étiquette est
celle de la règle déterministe :

{rule_lines}

Le dépassement relatif vaut (valeur − seuil) / seuil (le minimum des deux pour la tendinite
d'Achille) ; la pathologie retenue est celle du plus grand dépassement. Confiance `élevée` s'il vaut
au moins {high} et qu'une seule règle se déclenche, `modérée` s'il \
vaut au moins {moderate}, `faible` sinon. Aucun profil d'évaluation n'apparaît à l'entraînement (vérifié à la génération).

{how}

## Limites

- Données **entièrement synthétiques** : les étiquettes sont celles d'une règle à seuils, pas de
  diagnostics cliniques. Un modèle entraîné dessus apprend la règle, pas la médecine.
- Ce jeu de données et les modèles qui en sont issus **ne sont pas des dispositifs médicaux** ;
  ils ne remplacent pas l'avis d'un professionnel de santé.
- Les lois de la population sont plausibles, non ajustées sur une cohorte réelle.
"""


def main(cfg: CardConfig, settings: Settings) -> dict:
    """Read and validate the datasets (in cfg.data_dir, else the settings' data folder), render
    the card, write <data>/training/README.md; prints and returns {card, records}."""
    data_dir = Path(cfg.data_dir) if cfg.data_dir is not None else settings.aria_data_dir
    paths = {
        "sft.jsonl": data_dir / "training" / "sft.jsonl",
        "dpo.jsonl": data_dir / "training" / "dpo.jsonl",
        "eval.jsonl": data_dir / "eval" / "eval.jsonl",
    }
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: run `make datasets` first")
    try:
        records = {name: read_jsonl(p, VALIDATORS[name]) for name, p in paths.items()}
    except DataError as e:
        raise SystemExit(f"{e}\nregenerate with `make datasets`") from None
    stats = dataset_stats(records["sft.jsonl"], records["dpo.jsonl"], records["eval.jsonl"])
    stats_path = data_dir / "training" / "stats.json"
    generation = {}
    if stats_path.is_file():
        generation = json.loads(stats_path.read_text(encoding="utf-8")).get("generation", {})
    out = data_dir / "training" / "README.md"
    atomic_write_text(out, render_dataset_card(stats, cfg, generation))
    log.info("wrote %s (%d records)", out, sum(stats["records"].values()))
    result = {"card": str(out), "records": stats["records"]}
    print(json.dumps(result))
    return result


def parse_args(argv: list[str] | None = None) -> CardConfig:
    """CLI flags -> CardConfig."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="default: ARIA_DATA_DIR")
    parser.add_argument("--license", default=CardConfig.license)
    args = parser.parse_args(argv)
    return CardConfig(data_dir=args.data_dir, license=args.license)


if __name__ == "__main__":
    setup_logging()
    settings = get_settings()
    main(parse_args(sys.argv[1:]), settings)
