"""Publishing to the Hub: the upload plan, the errors, and the push against a local stand-in.

The Hugging Face Hub cannot be reached from our machines (no network to huggingface.co), so the
push tests run huggingface_hub for real against `HubStandIn`: a small threaded HTTP server on
127.0.0.1 that answers the few routes a push uses (create repo, validate the card's YAML, preupload,
commit, tag) the way the Hub does, and records every request. HF_ENDPOINT points the client at it.
The stand-in answers "regular" to preupload, so file contents travel inline (base64) in the
ndjson commit and no LFS or Xet transfer is involved.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from aria.settings import Settings
from publishing import hf_push
from publishing.hf_push import PushConfig, excluded_by, plan_folder


def make_settings(tmp_path: Path, **overrides) -> Settings:
    """Settings on a temp data folder, ignoring any .env of the checkout."""
    values = {
        "aria_profile": "tiny",
        "aria_data_dir": tmp_path / "data",
        "hf_token": None,
        "hf_model_repo": None,
        "hf_dataset_repo": None,
    }
    return Settings(_env_file=None, **(values | overrides))


def write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def fake_model(settings: Settings) -> Path:
    """A trained-looking aria-ft-dpo folder, with what must go up and what must not."""
    folder = settings.model_dir("aria-ft-dpo")
    write(folder / "README.md", "---\nlicense: apache-2.0\n---\n# card\n")
    write(folder / "config.json", '{"model_type": "gemma3_text"}')
    write(folder / "model.safetensors", b"\x00" * 1234)
    write(folder / "tokenizer.json", "{}")
    write(folder / "generation_config.json", '{"eos_token_id": [1, 106]}')
    for junk in (
        "optimizer.pt",
        "scheduler.pt",
        "rng_state.pth",
        "trainer_state.json",
        "training_args.bin",
        "server.pid",
        ".env",
        "checkpoint-500/adapter_model.safetensors",
        "checkpoint-500/optimizer.pt",
        "runs/events.out.tfevents.1.host",
        ".README.md.tmp123",
    ):
        write(folder / junk, b"secret or useless")
    return folder


EXPECTED_MODEL_FILES = {
    "README.md",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
}


# --- the exclusion list and the plan (pure, no network)


@pytest.mark.parametrize(
    ("path", "pattern"),
    [
        ("optimizer.pt", "optimizer.pt"),
        ("scheduler.pt", "scheduler.pt"),
        ("rng_state_0.pth", "rng_state*"),
        ("checkpoint-135/model.safetensors", "checkpoint-*/"),
        ("sub/checkpoint-1/config.json", "checkpoint-*/"),
        ("trainer_state.json", "trainer_state.json"),
        ("serve.pid", "*.pid"),
        (".env", ".env"),
        ("logs/events.out.tfevents.17.box", "events.out.tfevents*"),
        (".model.safetensors.tmp", ".*"),
    ],
)
def test_excluded_by_names_the_pattern(path: str, pattern: str) -> None:
    assert excluded_by(path) == pattern


@pytest.mark.parametrize(
    "path",
    ["model.safetensors", "config.json", "README.md", "training/sft.jsonl", "checkpoint.md"],
)
def test_files_a_release_needs_are_kept(path: str) -> None:
    assert excluded_by(path) is None


def test_dry_run_lists_exactly_the_publishable_files_with_sizes(tmp_path, capsys) -> None:
    settings = make_settings(tmp_path, hf_model_repo="me/aria-ft-dpo")
    fake_model(settings)
    summary = hf_push.main(PushConfig("model", dry_run=True, revision="v-test"), settings)
    out = capsys.readouterr().out
    last = json.loads(out.strip().splitlines()[-1])
    assert set(last["paths"]) == EXPECTED_MODEL_FILES
    assert summary["files"] == len(EXPECTED_MODEL_FILES)
    sizes = {p.name: p.stat().st_size for p in settings.model_dir("aria-ft-dpo").iterdir()}
    assert summary["bytes"] == sum(sizes[name] for name in EXPECTED_MODEL_FILES)
    assert "optimizer.pt" not in out and "checkpoint-500" not in out and ".env" not in out
    assert "model.safetensors" in out and "total" in out


def test_dry_run_needs_no_token_nor_repo(tmp_path, capsys, caplog) -> None:
    settings = make_settings(tmp_path)
    fake_model(settings)
    summary = hf_push.main(PushConfig("model", dry_run=True), settings)
    assert summary["repo"] is None
    assert "HF_MODEL_REPO" in capsys.readouterr().out
    assert "set HF_MODEL_REPO in .env" in caplog.text


def test_dataset_plan_puts_the_card_at_the_root(tmp_path) -> None:
    settings = make_settings(tmp_path)
    write(settings.training_dir / "README.md", "---\nlicense: apache-2.0\n---\n# data\n")
    write(settings.training_dir / "sft.jsonl", '{"prompt": "p", "completion": "c"}\n')
    write(settings.training_dir / "dpo.jsonl", "{}\n")
    write(settings.eval_path, "{}\n")
    paths = [f.path_in_repo for f in hf_push.upload_plan("datasets", settings)]
    assert paths == ["README.md", "training/dpo.jsonl", "training/sft.jsonl", "eval/eval.jsonl"]


def test_plan_folder_prefixes_and_sorts(tmp_path) -> None:
    write(tmp_path / "b.txt", "bb")
    write(tmp_path / "a" / "c.txt", "c")
    write(tmp_path / "a" / "x.pid", "1")
    planned = plan_folder(tmp_path, "p/")
    assert [(f.path_in_repo, f.size) for f in planned] == [("p/a/c.txt", 1), ("p/b.txt", 2)]


# --- errors that name the cause and the fix


def test_missing_model_names_train_dpo(tmp_path) -> None:
    with pytest.raises(SystemExit, match="make train-dpo"):
        hf_push.main(PushConfig("model", dry_run=True), make_settings(tmp_path))


def test_missing_card_names_model_card(tmp_path) -> None:
    settings = make_settings(tmp_path)
    (fake_model(settings) / "README.md").unlink()
    with pytest.raises(SystemExit, match="make model-card"):
        hf_push.main(PushConfig("model", dry_run=True), settings)


def test_missing_datasets_names_make_datasets(tmp_path) -> None:
    with pytest.raises(SystemExit, match="make datasets"):
        hf_push.main(PushConfig("datasets", dry_run=True), make_settings(tmp_path))


def test_push_without_token_names_hf_token_and_env(tmp_path) -> None:
    settings = make_settings(tmp_path, hf_model_repo="me/aria-ft-dpo")
    fake_model(settings)
    with pytest.raises(SystemExit, match=r"HF_TOKEN.*\.env"):
        hf_push.main(PushConfig("model"), settings)


def test_push_without_repo_names_the_variable(tmp_path) -> None:
    settings = make_settings(tmp_path, hf_token="hf_secret_value")
    write(settings.training_dir / "README.md", "# data\n")
    write(settings.eval_path, "{}\n")
    with pytest.raises(SystemExit, match=r"HF_DATASET_REPO.*\.env") as error:
        hf_push.main(PushConfig("datasets"), settings)
    assert "hf_secret_value" not in str(error.value)


# --- the push against the local stand-in of the Hub


class HubStandIn:
    """A threaded HTTP server answering the Hub routes of a push; `fail_next` injects 503s."""

    ROUTE = re.compile(r"^/api/(models|datasets)/([^/]+/[^/]+)/(preupload|commit|tag)/([^/?]+)")

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.commits: list[dict] = []
        self.tags: list[dict] = []
        self.created: list[dict] = []
        self.fail_next: dict[str, int] = {}  # route name -> how many 503 answers to give first
        self.drop_next: dict[str, int] = {}  # route name -> how many connections to drop unanswered
        self.refuse: int | None = None  # answer every request with this status (401, 403)
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if stand_in.drop(self.path):
                    self.close_connection = True  # no answer at all: the client sees a lost link
                    return
                status, answer = stand_in.answer(self.path, self.headers, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def drop(self, path: str) -> bool:
        """True (and one fewer left) when this request's connection is to be dropped unanswered."""
        route = path.split("?")[0]
        if self.drop_next.get(route, 0) > 0:
            self.drop_next[route] -= 1
            self.requests.append({"route": route, "auth": None, "dropped": True})
            return True
        return False

    def answer(self, path: str, headers, body: bytes) -> tuple[int, dict]:
        """Route one request; returns (status, JSON answer)."""
        path = path.split("?")[0]
        match = self.ROUTE.match(path)
        route = match.group(3) if match else path
        self.requests.append({"route": route, "auth": headers.get("authorization")})
        if self.refuse is not None:  # the Hub's answer to a read-only or a bad token
            return self.refuse, {
                "error": "You don't have the rights to create a model under the namespace"
            }
        if self.fail_next.get(route, 0) > 0:
            self.fail_next[route] -= 1
            return 503, {"error": "Service Unavailable"}
        if path == "/api/repos/create":
            payload = json.loads(body)
            self.created.append(payload)
            kind = "datasets/" if payload.get("type") == "dataset" else ""
            return 200, {
                "url": f"{self.endpoint}/{kind}{payload['organization']}/{payload['name']}"
            }
        if path == "/api/validate-yaml":
            return 200, {"errors": [], "warnings": []}
        if not match:
            return 404, {"error": f"no route {path}"}
        kind, repo_id, _, revision = match.groups()
        prefix = "" if kind == "models" else "datasets/"
        if route == "preupload":
            files = json.loads(body)["files"]
            return 200, {
                "files": [
                    {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                    for f in files
                ]
            }
        if route == "commit":
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            files = {
                item["value"]["path"]: base64.b64decode(item["value"]["content"])
                for item in lines
                if item["key"] == "file"
            }
            oid = f"{len(self.commits) + 1:040x}"
            self.commits.append(
                {"repo": repo_id, "revision": revision, "header": lines[0], "files": files}
            )
            return 200, {
                "commitUrl": f"{self.endpoint}/{prefix}{repo_id}/commit/{oid}",
                "commitOid": oid,
                "success": True,
            }
        self.tags.append({"repo": repo_id, "revision": revision, **json.loads(body)})
        return 200, {}

    def __enter__(self) -> HubStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hub(monkeypatch):
    """The stand-in, with HF_ENDPOINT pointing at it and no proxy in the way."""
    with HubStandIn() as stand_in:
        monkeypatch.setenv("HF_ENDPOINT", stand_in.endpoint)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        yield stand_in


def test_model_push_creates_private_repo_one_commit_and_a_tag(
    tmp_path, hub, capsys, caplog
) -> None:
    caplog.set_level(logging.INFO)
    token = "hf_test_token_never_printed"
    settings = make_settings(tmp_path, hf_token=token, hf_model_repo="me/aria-ft-dpo")
    folder = fake_model(settings)
    hub.fail_next = {"/api/repos/create": 1}  # a transient 503 first: must be retried
    cfg = PushConfig("model", revision="v20250101-abc1234", retry_base_s=0.01)
    summary = hf_push.main(cfg, settings)

    creates = [r for r in hub.requests if r["route"] == "/api/repos/create"]
    assert len(creates) == 2, "the 503 was not retried"
    assert hub.created == [
        {"name": "aria-ft-dpo", "organization": "me", "visibility": "private", "type": "model"}
    ]
    assert len(hub.commits) == 1
    commit = hub.commits[0]
    assert commit["repo"] == "me/aria-ft-dpo" and commit["revision"] == "main"
    assert set(commit["files"]) == EXPECTED_MODEL_FILES
    assert commit["files"]["model.safetensors"] == (folder / "model.safetensors").read_bytes()
    assert hub.tags == [
        {"repo": "me/aria-ft-dpo", "revision": summary["commit"], "tag": "v20250101-abc1234"}
    ]
    assert all(r["auth"] == f"Bearer {token}" for r in hub.requests)
    assert token not in capsys.readouterr().out and token not in caplog.text
    assert "transient error" in caplog.text and "pushed" in caplog.text


def test_a_dropped_connection_is_retried(tmp_path, hub) -> None:
    # huggingface_hub 2.4 raises httpx2's errors (RemoteProtocolError here), which are neither
    # httpx errors nor ConnectionError: the push must still retry them.
    settings = make_settings(tmp_path, hf_token="hf_x", hf_model_repo="me/aria-ft-dpo")
    fake_model(settings)
    hub.drop_next = {"/api/repos/create": 1}
    hf_push.main(PushConfig("model", revision="v-drop", retry_base_s=0.01), settings)
    creates = [r for r in hub.requests if r["route"] == "/api/repos/create"]
    assert [r.get("dropped", False) for r in creates] == [True, False]
    assert len(hub.commits) == 1 and len(hub.tags) == 1


def test_dataset_push_goes_to_the_dataset_repo_and_public_on_request(tmp_path, hub) -> None:
    settings = make_settings(tmp_path, hf_token="hf_x", hf_dataset_repo="me/aria-datasets")
    write(settings.training_dir / "README.md", "---\nlicense: apache-2.0\n---\n# data\n")
    write(settings.training_dir / "sft.jsonl", "{}\n")
    write(settings.training_dir / ".sft.jsonl.tmp", "half")
    write(settings.eval_path, "{}\n")
    hf_push.main(PushConfig("datasets", revision="v1", public=True), settings)
    assert hub.created[0]["type"] == "dataset" and hub.created[0]["visibility"] == "public"
    assert set(hub.commits[0]["files"]) == {"README.md", "training/sft.jsonl", "eval/eval.jsonl"}
    assert hub.tags[0]["repo"] == "me/aria-datasets" and hub.tags[0]["tag"] == "v1"


@pytest.mark.parametrize("status", [401, 403])
def test_a_push_the_hub_refuses_names_hf_token_and_write_access(tmp_path, hub, status) -> None:
    hub.refuse = status
    settings = make_settings(tmp_path, hf_token="hf_read_only", hf_model_repo="me/aria-ft-dpo")
    fake_model(settings)
    with pytest.raises(SystemExit, match=rf"refused the push .*HTTP {status}.*HF_TOKEN.*write"):
        hf_push.main(PushConfig("model", revision="v-refused", retry_base_s=0.01), settings)
    assert hub.requests and all(r["auth"] == "Bearer hf_read_only" for r in hub.requests)
    assert not hub.commits
