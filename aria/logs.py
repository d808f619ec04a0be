"""What a run tells a person goes through `logging`: one setup, called by every entry point.

    >>> import logging
    >>> from aria.logs import setup_logging
    >>> setup_logging()                      # in a module's `main`, before anything is logged
    >>> logging.getLogger(__name__).info("SFT published: %s", path)

A terminal gets rich's handler (levels, times, wrapped text), a pipe or a file plain lines on
stderr, so stdout keeps only a command's own result (its table, its last JSON line). Under several
processes (accelerate, torchrun: RANK is set) only rank 0 logs below WARNING. ARIA_LOG_LEVEL
(DEBUG, INFO, WARNING) sets the level; the default is INFO.
"""

from __future__ import annotations

import logging
import os
import sys

FORMAT = "%(levelname)s %(name)s: %(message)s"
# Libraries that log a line per request or per file at INFO.
QUIET = ("httpx", "httpcore", "urllib3", "filelock", "huggingface_hub")


def process_rank() -> int:
    """This process's rank under torchrun/accelerate (RANK), 0 for a single process."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


class _ModuleName(logging.Filter):
    """Names `__main__` after the module run with `python -m` (serve.vllm_server, not __main__)."""

    def __init__(self) -> None:
        super().__init__()
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        self.name_of_main = spec.name if spec is not None else "__main__"

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "__main__":
            record.name = self.name_of_main
        return True


def setup_logging(level: str | None = None) -> None:
    """Configure the root logger once for a command: rich in a terminal, plain lines otherwise,
    INFO (or ARIA_LOG_LEVEL, or `level`) on rank 0 and WARNING on the other ranks."""
    wanted = (level or os.environ.get("ARIA_LOG_LEVEL") or "INFO").upper()
    if process_rank() != 0:
        wanted = "WARNING"
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler.addFilter(_ModuleName())
    root.addHandler(handler)
    root.setLevel(getattr(logging, wanted, logging.INFO))
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
