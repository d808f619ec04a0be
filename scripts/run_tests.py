"""Everything `make test` checks, in one process: lint, the docs build, then the whole pytest suite.

    python -m scripts.run_tests            # what `make test` runs (after the install step)
    python -m scripts.run_tests -k domain  # extra arguments go to pytest

pytest runs last so that its closing line ("N passed ...") is the last thing CI prints.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field

from aria.logs import setup_logging

STEPS: list[tuple[str, list[str]]] = [
    ("ruff check", [sys.executable, "-m", "ruff", "check", "."]),
    ("ruff format --check", [sys.executable, "-m", "ruff", "format", "--check", "."]),
    ("docs build (mkdocs --strict)", [sys.executable, "-m", "mkdocs", "build", "--strict", "-q"]),
]


@dataclass
class RunTestsConfig:
    """The arguments given to pytest (`-k domain`, `-x`, ...)."""

    pytest_args: list[str] = field(default_factory=list)


def parse_args(argv: list[str] | None = None) -> RunTestsConfig:
    """Every argument (default sys.argv) goes to pytest."""
    return RunTestsConfig(list(sys.argv[1:] if argv is None else argv))


def main(cfg: RunTestsConfig) -> int:
    """Run each step, printing ✓ or ✗ with its time (the checklist is the command's result); keep
    going after a failure so one run shows every problem. It reads no settings."""
    failures = []
    for name, cmd in STEPS:
        started = time.monotonic()
        code = subprocess.run(cmd).returncode
        print(
            f"{'✓' if code == 0 else '✗'} {name} ({time.monotonic() - started:.0f} s)", flush=True
        )
        if code != 0:
            failures.append(name)
    code = subprocess.run([sys.executable, "-m", "pytest", *cfg.pytest_args]).returncode
    if code == 5:
        print("✗ pytest collected no test: that is a failure here")
    if failures:
        print(f"✗ failed before pytest: {', '.join(failures)}")
    return code or (1 if failures else 0)


if __name__ == "__main__":
    setup_logging()
    raise SystemExit(main(parse_args()))
