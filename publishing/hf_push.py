"""Publish the production model or the datasets to the Hugging Face Hub, in one commit plus a tag.

    python -m publishing.hf_push model --dry-run      # what `make hf-push-model ARGS=--dry-run` runs
    python -m publishing.hf_push model                # push data/models/<profile>/aria-ft-dpo
    python -m publishing.hf_push datasets             # push data/training + data/eval and the dataset card
    python -m publishing.hf_push model --revision v1.0 --public

The repo (HF_MODEL_REPO or HF_DATASET_REPO) is created private unless --public, then every file
that may go up is sent in a single commit and tagged (v<date>-<git short sha> unless --revision).
Optimizer states, checkpoints, pid files and secrets never go up (`excluded_by`). `--dry-run`
lists the exact files, sizes and total without a token. The endpoint follows HF_ENDPOINT.
Transient Hub errors (5xx, lost connection) are retried with backoff (aria.retry); nothing else is.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from aria.logs import setup_logging
from aria.retry import with_retries
from aria.settings import Settings, get_settings

log = logging.getLogger(__name__)

T = TypeVar("T")
Target = Literal["model", "datasets"]

# Never published: training state that is large and useless downstream, runtime files and secrets.
# A pattern ending in "/" excludes a folder and everything under it.
EXCLUDED_PATTERNS: tuple[str, ...] = (
    "checkpoint-*/",
    "runs/",
    "__pycache__/",
    "optimizer.pt",
    "scheduler.pt",
    "scaler.pt",
    "rng_state*",
    "trainer_state.json",
    "training_args.bin",
    "events.out.tfevents*",
    "*.pid",
    "*.log",
    ".env",
    ".env.*",
    ".*",  # hidden files: temp files of atomic writes, editor and OS droppings
)


@dataclass(frozen=True)
class PlannedFile:
    """One file of the upload: where it lands in the repo, where it is read from, its size."""

    path_in_repo: str
    local_path: Path
    size: int


@dataclass
class PushConfig:
    """What to push and how; the retry knobs exist so tests need not wait."""

    target: Target
    dry_run: bool = False
    revision: str | None = None  # tag name; default v<YYYYMMDD>-<git short sha>
    public: bool = False
    retry_attempts: int = 4
    retry_base_s: float = 2.0


def excluded_by(path_in_repo: str) -> str | None:
    """The pattern of EXCLUDED_PATTERNS that keeps this repo path off the Hub, or None if it may go."""
    parts = path_in_repo.split("/")
    for pattern in EXCLUDED_PATTERNS:
        if pattern.endswith("/"):
            if any(fnmatch.fnmatchcase(p, pattern[:-1]) for p in parts[:-1]):
                return pattern
        elif any(fnmatch.fnmatchcase(p, pattern) for p in parts):
            return pattern
    return None


def plan_folder(folder: Path, prefix: str = "") -> list[PlannedFile]:
    """Every file under `folder` that may go up, as repo paths under `prefix`, sorted."""
    planned = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        path_in_repo = prefix + path.relative_to(folder).as_posix()
        if excluded_by(path_in_repo) is None:
            planned.append(PlannedFile(path_in_repo, path, path.stat().st_size))
    return planned


def upload_plan(target: Target, settings: Settings) -> list[PlannedFile]:
    """The files of a push; raises SystemExit naming the make target when an input is missing."""
    if target == "model":
        folder = settings.model_dir("aria-ft-dpo")
        if not folder.is_dir():
            raise SystemExit(f"no production model in {folder}: run `make train-dpo` first")
        if not (folder / "README.md").exists():
            raise SystemExit(f"no model card in {folder}: run `make model-card` first")
        return plan_folder(folder)
    training, evaluation = settings.training_dir, settings.eval_path.parent
    for folder in (training, evaluation):
        if not folder.is_dir():
            raise SystemExit(f"no dataset in {folder}: run `make datasets` first")
    if not (training / "README.md").exists():
        raise SystemExit(f"no dataset card {training / 'README.md'}: run `make dataset-card` first")
    # The dataset card becomes the repo's README; the data keep their folder names.
    card = PlannedFile("README.md", training / "README.md", (training / "README.md").stat().st_size)
    files = [
        f for f in plan_folder(training, "training/") if f.path_in_repo != "training/README.md"
    ]
    return [card, *files, *plan_folder(evaluation, "eval/")]


def repo_settings(target: Target, settings: Settings) -> tuple[str | None, str, str]:
    """(repo id or None, Hub repo type, the variable that names the repo)."""
    if target == "model":
        return settings.hf_model_repo, "model", "HF_MODEL_REPO"
    return settings.hf_dataset_repo, "dataset", "HF_DATASET_REPO"


def default_tag(now: datetime | None = None) -> str:
    """v<YYYYMMDD>-<short sha of the code that produced the release> (`nogit` outside git)."""
    now = now or datetime.now(UTC)
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        sha = "nogit"
    return f"v{now:%Y%m%d}-{sha or 'nogit'}"


def human_size(size: float) -> str:
    """Bytes as B, KB, MB or GB (powers of 1000, as the Hub shows them)."""
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def plan_table(files: list[PlannedFile], repo: str, repo_type: str) -> str:
    """The upload as a table: repo path, size, and the total."""
    width = max([len(f.path_in_repo) for f in files] + [10])
    lines = [f"{repo_type} repo {repo}: {len(files)} files"]
    lines += [f"  {f.path_in_repo:<{width}}  {human_size(f.size):>9}" for f in files]
    lines.append(f"  {'total':<{width}}  {human_size(sum(f.size for f in files)):>9}")
    return "\n".join(lines)


@contextmanager
def refused_push_names_the_token(repo_id: str) -> Iterator[None]:
    """A 401/403 from the Hub (no write access, a read token, a bad token) becomes a SystemExit
    naming HF_TOKEN, instead of a traceback."""
    try:
        yield
    except Exception as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        if status not in (401, 403):
            raise
        raise SystemExit(
            f"the Hugging Face Hub refused the push to {repo_id} (HTTP {status}): HF_TOKEN must "
            f"be a token with write access to {repo_id} (a write token, or a fine-grained one "
            "with write on that repo); put it in .env or the environment"
        ) from None


def main(cfg: PushConfig, settings: Settings) -> dict[str, Any]:
    """Plan the upload, then (unless dry-run) create the repo, commit once and tag the commit.
    A dry run prints the plan (its result); a push logs it and prints the summary's JSON line."""
    repo_id, repo_type, repo_var = repo_settings(cfg.target, settings)
    files = upload_plan(cfg.target, settings)
    tag = cfg.revision or default_tag()
    summary: dict[str, Any] = {
        "target": cfg.target,
        "repo": repo_id,
        "repo_type": repo_type,
        "private": not cfg.public,
        "tag": tag,
        "files": len(files),
        "bytes": sum(f.size for f in files),
        "dry_run": cfg.dry_run,
    }
    if cfg.dry_run:
        print(plan_table(files, repo_id or f"<{repo_var} unset>", repo_type))
        if not repo_id:
            log.warning("set %s in .env before the real push", repo_var)
        print(json.dumps(summary | {"paths": [f.path_in_repo for f in files]}))
        return summary
    if not repo_id:
        raise SystemExit(f"{repo_var} is not set: add e.g. {repo_var}=username/name to .env")
    if settings.hf_token is None or not settings.hf_token.get_secret_value():
        raise SystemExit(
            "HF_TOKEN is not set: add a Hugging Face token with write access to .env "
            "(HF_TOKEN=hf_...), or run with --dry-run to see the plan"
        )
    log.info("%s", plan_table(files, repo_id, repo_type))
    url, commit = push(cfg, settings, repo_id, repo_type, files, tag)
    summary |= {"url": str(url), "commit": commit}
    log.info(
        "✓ pushed %d files (%s) to %s @ %s, tag %s",
        len(files),
        human_size(summary["bytes"]),
        url,
        commit,
        tag,
    )
    print(json.dumps(summary))
    return summary


def push(
    cfg: PushConfig, settings: Settings, repo_id: str, repo_type: str, files: list, tag: str
) -> tuple[str, str]:
    """Create the repo (private unless cfg.public), commit `files` once, tag the commit; each
    call retried on transient errors. Returns (repo URL, commit id)."""
    from huggingface_hub import CommitOperationAdd, HfApi

    # Read here, not at import, so a test's HF_ENDPOINT reaches huggingface_hub too.
    api = HfApi(
        endpoint=os.environ.get("HF_ENDPOINT") or None, token=settings.hf_token.get_secret_value()
    )

    def retried(call: Callable[[], T], what: str) -> T:
        def tell(error: BaseException, wait: float) -> None:
            log.warning(
                "%s: transient error (%s), retry in %.1f s", what, type(error).__name__, wait
            )

        return with_retries(
            call, attempts=cfg.retry_attempts, base_s=cfg.retry_base_s, on_retry=tell
        )

    with refused_push_names_the_token(repo_id):
        url = retried(
            lambda: api.create_repo(
                repo_id, repo_type=repo_type, private=not cfg.public, exist_ok=True
            ),
            "create repo",
        )
    size = human_size(sum(f.size for f in files))
    # Operations are rebuilt on each attempt: huggingface_hub mutates them during a commit.
    commit = retried(
        lambda: api.create_commit(
            repo_id,
            [CommitOperationAdd(f.path_in_repo, str(f.local_path)) for f in files],
            commit_message=f"ARIA {cfg.target} release {tag}",
            commit_description=f"{len(files)} files, {size}; `python -m publishing.hf_push`",
            repo_type=repo_type,
        ),
        "commit",
    )
    try:
        retried(
            lambda: api.create_tag(repo_id, tag=tag, revision=commit.oid, repo_type=repo_type),
            "tag",
        )
    except Exception as error:
        if getattr(getattr(error, "response", None), "status_code", None) == 409:
            raise SystemExit(
                f"tag {tag} already exists on {repo_id}: the commit {commit.oid} is pushed; "
                "name a new tag with --revision TAG"
            ) from None
        raise
    return url, commit.oid


def parse_args(argv: list[str] | None = None) -> PushConfig:
    """CLI flags into a PushConfig."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=["model", "datasets"])
    parser.add_argument("--dry-run", action="store_true", help="list the files, push nothing")
    parser.add_argument("--revision", default=None, help="tag of this release")
    parser.add_argument("--public", action="store_true", help="create the repo public")
    args = parser.parse_args(argv)
    return PushConfig(args.target, args.dry_run, args.revision, args.public)


if __name__ == "__main__":
    setup_logging()
    settings = get_settings()
    main(parse_args(), settings)
