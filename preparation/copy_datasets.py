"""Import sft.jsonl / dpo.jsonl / eval.jsonl from a folder, through the generator's own validation.

    python -m preparation.copy_datasets --src /path/to/folder      # make copy-datasets SRC=/path/to/folder

The folder holds the files flat (`sft.jsonl`, `dpo.jsonl`, `eval.jsonl`) or in the data layout
(`training/sft.jsonl`, `training/dpo.jsonl`, `eval/eval.jsonl`); at least one must be there. Every
line of every file is validated first (`aria.records`: the rule's label, schema-valid reference
JSON, grounded reports, real DPO errors, unique eval ids, no eval profile in training); a bad line
stops the import with `file:line: reason` and nothing is written. Then each file is copied
atomically to ARIA_DATA_DIR (training/ and eval/) and training/stats.json is refreshed.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from aria.files import DataError, atomic_write_json, atomic_write_text, read_jsonl
from aria.logs import setup_logging
from aria.records import VALIDATORS, check_no_leakage, check_unique_ids, dataset_stats
from aria.settings import Settings, get_settings

# Where each file lives under a data folder.
DATA_LAYOUT: dict[str, str] = {
    "sft.jsonl": "training/sft.jsonl",
    "dpo.jsonl": "training/dpo.jsonl",
    "eval.jsonl": "eval/eval.jsonl",
}


@dataclass
class CopyConfig:
    """Where to read the datasets from and where to install them."""

    src: Path | None
    out_dir: Path | None = None  # default: settings.aria_data_dir


def find_sources(src: Path) -> dict[str, Path]:
    """The dataset files present in `src` (flat or data layout); raises SystemExit if none."""
    if not src.is_dir():
        raise SystemExit(
            f"SRC={src} is not a folder: give the folder holding sft.jsonl, dpo.jsonl and/or "
            "eval.jsonl, e.g. `make copy-datasets SRC=/path/to/folder`"
        )
    found: dict[str, Path] = {}
    for name, nested in DATA_LAYOUT.items():
        for candidate in (src / name, src / nested):
            if candidate.is_file():
                found[name] = candidate
                break
    if not found:
        raise SystemExit(
            f"SRC={src} holds none of {', '.join(DATA_LAYOUT)} (flat or as "
            f"{', '.join(DATA_LAYOUT.values())}): nothing to import"
        )
    return found


def main(cfg: CopyConfig, settings: Settings) -> dict[str, int]:
    """Validate every given file, then copy them (to cfg.out_dir, else the settings' data
    folder); prints what was copied and the JSON line, returns the number of records per file."""
    if cfg.src is None:
        raise SystemExit("no source folder: run `make copy-datasets SRC=/path/to/folder`")
    out_dir = Path(cfg.out_dir) if cfg.out_dir is not None else settings.aria_data_dir
    sources = find_sources(Path(cfg.src))

    # Validate everything before writing anything: a bad line leaves the destination untouched.
    records: dict[str, list[dict]] = {}
    try:
        for name, path in sources.items():
            records[name] = read_jsonl(path, VALIDATORS[name])
        if "eval.jsonl" in records:
            check_unique_ids(records["eval.jsonl"])
    except (DataError, ValueError) as e:
        raise SystemExit(f"{e}\nnothing was copied; fix the file and run again") from None

    # The leakage check covers what the destination will hold: imported files, else existing ones.
    final: dict[str, list[dict]] = {}
    for name, rel in DATA_LAYOUT.items():
        if name in records:
            final[name] = records[name]
        elif (out_dir / rel).is_file():
            final[name] = read_jsonl(out_dir / rel, VALIDATORS[name])
    training = final.get("sft.jsonl", []) + final.get("dpo.jsonl", [])
    try:
        check_no_leakage(training, final.get("eval.jsonl", []))
    except ValueError as e:
        raise SystemExit(f"{e}\nnothing was copied") from None

    for name, path in sources.items():
        atomic_write_text(out_dir / DATA_LAYOUT[name], path.read_text(encoding="utf-8"))
    if len(final) == len(DATA_LAYOUT):
        stats = dataset_stats(final["sft.jsonl"], final["dpo.jsonl"], final["eval.jsonl"])
        stats["generation"] = {"imported_from": str(Path(cfg.src).resolve())}
        atomic_write_json(out_dir / "training" / "stats.json", stats)

    counts = {name: len(rs) for name, rs in records.items()}
    for name, n in counts.items():
        print(f"  {name:<11} {n:>6} records  {sources[name]} -> {out_dir / DATA_LAYOUT[name]}")
    print(json.dumps({"copied": counts, "out_dir": str(out_dir)}))
    return counts


def parse_args(argv: list[str] | None = None) -> CopyConfig:
    """CLI flags -> CopyConfig."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # A string, not a Path: Path("") would silently become the current folder.
    parser.add_argument("--src", default="", help="folder with the JSONL files")
    parser.add_argument("--out-dir", type=Path, default=None, help="default: ARIA_DATA_DIR")
    args = parser.parse_args(argv)
    return CopyConfig(src=Path(args.src) if args.src.strip() else None, out_dir=args.out_dir)


if __name__ == "__main__":
    setup_logging()
    settings = get_settings()
    main(parse_args(sys.argv[1:]), settings)
