"""Latency and quality of the served models on both diagnostic bodies, their comparison, the gate.

    python -m scripts.benchmark --limit 50 --warmup 2          # make benchmark ARGS="..."
    python -m scripts.benchmark --resume 20250101-120000       # finish an interrupted run

The entry point of the evaluation package: evaluation/__init__.py describes the flags, the
records files and summary.json; `python -m scripts.benchmark --help` lists the flags.
"""

from aria.logs import setup_logging
from aria.settings import get_settings
from evaluation.runner import main, parse_args

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    setup_logging()
    settings = get_settings()
    raise SystemExit(main(parse_args(settings=settings), settings))
