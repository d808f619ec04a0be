"""Atomic outputs and JSONL input with errors that name the file and line.

A crash never leaves a half-written file or folder where the next step would read it: writers
work in a temporary sibling and rename it into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
_UMASK = os.umask(0)
os.umask(_UMASK)


class DataError(ValueError):
    """A bad line in a data file; the message starts with `file:line:`."""


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    """Write records as JSON lines atomically; returns how many were written."""
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write one JSON document atomically, indented for people."""
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


@contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a temporary folder next to `final`; on success it replaces `final` in one rename.

    On any error the temporary folder is removed and the previous `final` stays untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def read_jsonl(path: str | Path, parse: Callable[[dict], T] | None = None) -> list[T]:
    """Read a JSONL file; every bad line raises DataError('file:line: reason').

    `parse` validates one decoded record (and may convert it); its ValueError becomes a DataError.
    Blank lines are skipped. Nothing is returned unless every line is good.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    out: list[Any] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object")
            if parse is not None:
                try:
                    record = parse(record)
                except (ValueError, KeyError, TypeError) as e:
                    raise DataError(f"{path}:{lineno}: {e}") from None
            out.append(record)
    return out


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one record and flush it to disk, so a killed run loses at most the line in flight."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
