"""A local stand-in for the gated Hugging Face Hub, so the real Hub clients run in tests offline.

`GatedHub` serves each repo id from a local folder over plain HTTP on 127.0.0.1, answering the
routes huggingface_hub (2.x) and transformers (5.x) call as the Hub does for a *gated* model:

- HEAD/GET ``/{repo_id}/resolve/{revision}/{filename}`` (X-Repo-Commit, ETag, X-Linked-Etag,
  X-Linked-Size, Content-Length, Content-Type; single byte ranges);
- GET ``/api/models/{repo_id}`` and ``/api/models/{repo_id}/revision/{revision}`` (model_info);
- GET ``/api/models/{repo_id}/tree/{revision}[/{path}]`` (list_repo_tree, one page).

A request without ``Authorization: Bearer <token>`` gets the Hub's 401 for a gated repo
(``X-Error-Code: GatedRepo``), so huggingface_hub raises ``GatedRepoError``; a request with
another bearer token gets the Hub's 403 "not in the authorized list" (a real account that has not
accepted the terms, also ``GatedRepoError``), or with ``wrong_token="invalid"`` the Hub's 401
"Invalid credentials in Authorization header". Revisions are ``main`` or the repo's fixed commit
sha (``commit_sha``). Unknown repos get RepoNotFound, missing files EntryNotFound, unknown revisions
RevisionNotFound, any other route a plain 404; every request is recorded. No Xet header is ever
sent, so clients download over plain HTTP.

Unlike the real Hub, model_info and the tree listing are gated too (the Hub shows them to anyone):
a test can then assert that *no* request went out without the token.

Usage (HF_ENDPOINT is read when huggingface_hub is imported, so set it for a subprocess, or before
the first import; keep HF_TOKEN out of the environment and HF_HOME in a temp dir, or the clients
send a token of their own; HF_HUB_DISABLE_TELEMETRY=1 stops huggingface_hub's token-less
``GET /api/agent-harnesses``, which would otherwise show in ``unauthorized()``)::

    with GatedHub({"google/medgemma-4b-it": Path("tiny/base")}, token="hf_test") as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf")}
        env |= {"HF_HUB_DISABLE_TELEMETRY": "1"}
        env.pop("HF_TOKEN", None)
        subprocess.run([sys.executable, "-c", SCRIPT], env=env, check=True)
        assert hub.requests and not hub.unauthorized()

Seen with transformers 5.19 and token=... passed (no HF_TOKEN): AutoTokenizer.from_pretrained
sends one token-less tree listing (its list_repo_files call, error swallowed), and a concrete
config class (e.g. Gemma3TextConfig.from_pretrained) drops the token altogether, so it fails here
with GatedRepoError as it would on the Hub; with HF_TOKEN set, every request carries it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["GatedHub", "HubRequest", "ServedFile"]

# The Hub stores these in LFS (its default .gitattributes), and any file of 10 MiB or more.
LFS_SUFFIXES = frozenset({".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf", ".model", ".npz", ".pkl", ".zip"})  # fmt: skip
LFS_MIN_SIZE = 10 * 1024 * 1024
# Folders of a local model directory that are not repo content (git, the clients' own caches).
SKIPPED_DIRS = frozenset({".git", ".cache", "__pycache__"})
LAST_MODIFIED = "2025-05-20T00:00:00.000Z"

# A repo id is "name" or "namespace/name"; revisions and tree paths arrive percent-encoded.
_REPO = r"(?P<repo>[^/]+/[^/]+|[^/]+)"
RESOLVE_RE = re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
INFO_RE = re.compile(rf"^/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?/?$")
TREE_RE = re.compile(rf"^/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+?))?/?$")


@dataclass(frozen=True)
class HubRequest:
    """One request the stand-in answered."""

    method: str
    path: str  # URL path, percent-decoded, without the query
    query: str  # raw query string ("" if none)
    authorized: bool  # carried exactly `Authorization: Bearer <token>`
    status: int


@dataclass(frozen=True)
class ServedFile:
    """A file of a served repo, with the hashes the Hub reports for it."""

    local: Path
    size: int
    git_oid: str  # sha1 of the git blob (of the LFS pointer for LFS files), the tree's `oid`
    sha256: str
    lfs: bool
    text: bool  # valid UTF-8: the Hub serves it as text/plain

    @property
    def etag(self) -> str:
        # The Hub's ETag is the git blob id, or the sha256 for LFS files (then also X-Linked-Etag).
        return self.sha256 if self.lfs else self.git_oid

    def tree_entry(self, path: str) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "type": "file",
            "oid": self.git_oid,
            "size": self.size,
            "path": path,
        }
        if self.lfs:
            entry["lfs"] = {
                "oid": self.sha256,
                "size": self.size,
                "pointerSize": _pointer_size(self),
            }
        return entry


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
    )


def _pointer_size(served: ServedFile) -> int:
    return len(_lfs_pointer(served.sha256, served.size))


def _index_folder(folder: Path) -> dict[str, ServedFile]:
    """Every regular file under `folder`, keyed by its repo path ("a/b.json")."""
    files: dict[str, ServedFile] = {}
    for local in sorted(folder.rglob("*")):
        rel = local.relative_to(folder)
        if not local.is_file() or any(part in SKIPPED_DIRS for part in rel.parts[:-1]):
            continue
        data = local.read_bytes()
        sha256 = hashlib.sha256(data).hexdigest()
        lfs = local.suffix in LFS_SUFFIXES or len(data) >= LFS_MIN_SIZE
        try:
            data.decode("utf-8")
            text = True
        except UnicodeDecodeError:
            text = False
        oid = _git_blob_oid(_lfs_pointer(sha256, len(data)) if lfs else data)
        files[rel.as_posix()] = ServedFile(local, len(data), oid, sha256, lfs, text)
    return files


@dataclass(frozen=True)
class _Repo:
    repo_id: str
    files: dict[str, ServedFile]
    sha: str

    @classmethod
    def load(cls, repo_id: str, folder: Path) -> _Repo:
        files = _index_folder(folder)
        if not files:
            raise ValueError(f"{folder} holds no file to serve as {repo_id}")
        # A fixed commit sha derived from the content: the same folder always gets the same one.
        digest = hashlib.sha1(repo_id.encode())
        for path, served in files.items():
            digest.update(f"{path}\0{served.git_oid}\0".encode())
        return cls(repo_id, files, digest.hexdigest())

    def folders(self) -> set[str]:
        return {"/".join(p.split("/")[:i]) for p in self.files for i in range(1, p.count("/") + 1)}

    def folder_entry(self, folder: str) -> dict[str, Any]:
        inner = sorted(
            f"{p}\0{f.git_oid}" for p, f in self.files.items() if p.startswith(folder + "/")
        )
        oid = hashlib.sha1("\n".join(inner).encode()).hexdigest()
        return {"type": "directory", "oid": oid, "size": 0, "path": folder}

    def tree(self, base: str, recursive: bool) -> list[dict[str, Any]] | None:
        """Entries under `base` ("" for the root) like the Hub's tree API, or None if not a folder."""
        folders = self.folders()
        if base and base not in folders:
            return None
        prefix = base + "/" if base else ""

        def listed(path: str) -> bool:
            return path.startswith(prefix) and (recursive or "/" not in path[len(prefix) :])

        entries = [self.folder_entry(d) for d in sorted(folders) if listed(d)]
        entries += [f.tree_entry(p) for p, f in self.files.items() if listed(p)]
        return entries

    def model_info(self, blobs: bool) -> dict[str, Any]:
        siblings: list[dict[str, Any]] = []
        for path, served in self.files.items():
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:  # `files_metadata=True` asks for sizes and blob ids
                sibling |= {"size": served.size, "blobId": served.git_oid}
                if served.lfs:
                    lfs = {"sha256": served.sha256, "size": served.size}
                    sibling["lfs"] = lfs | {"pointerSize": _pointer_size(served)}
            siblings.append(sibling)
        author = self.repo_id.split("/")[0] if "/" in self.repo_id else None
        return {
            "_id": self.sha[:24],
            "id": self.repo_id,
            "modelId": self.repo_id,
            "author": author,
            "sha": self.sha,
            "lastModified": LAST_MODIFIED,
            "createdAt": LAST_MODIFIED,
            "private": False,
            "gated": "manual",
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": ["transformers", "safetensors"],
            "library_name": "transformers",
            "siblings": siblings,
        }


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keep-alive, as the clients pool connections; every response sets Content-Length.
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep the test output clean; `GatedHub.requests` is the log

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, open_=True)

    def finish(self) -> None:
        self.server.track(self.connection, open_=False)
        super().finish()

    def do_HEAD(self) -> None:
        self._answer()

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def do_PUT(self) -> None:
        self._answer()

    def do_DELETE(self) -> None:
        self._answer()

    def _answer(self) -> None:
        hub = self.server.hub
        split = urlsplit(self.path)
        auth = self.headers.get("Authorization")
        authorized = auth == f"Bearer {hub.token}"
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)  # drain a body so the kept-alive connection stays in sync
        try:
            status = self._route(split.path, parse_qs(split.query), authorized, auth is not None)
        except Exception:
            status = self._error(500, None, "Internal Error in the Hub stand-in")
            raise
        finally:
            hub._record(
                HubRequest(self.command, unquote(split.path), split.query, authorized, status)
            )

    def _route(
        self, path: str, query: dict[str, list[str]], authorized: bool, has_auth: bool
    ) -> int:
        if (m := RESOLVE_RE.match(path)) and self.command in ("GET", "HEAD"):
            kind = "resolve"
        elif (m := TREE_RE.match(path)) and self.command == "GET":
            kind = "tree"
        elif (m := INFO_RE.match(path)) and self.command == "GET":
            kind = "info"
        else:
            return self._error(404, None, "Not Found")
        repo = self.server.hub._repos.get(unquote(m["repo"]))
        denied = self._deny(repo, m["repo"], authorized, has_auth)
        if denied is not None:
            return denied
        assert repo is not None
        rev = unquote(m["rev"] or "main")
        if rev not in ("main", repo.sha):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        if kind == "info":
            return self._json(200, repo.model_info(blobs=_flag(query, "blobs")))
        if kind == "tree":
            base = unquote(m["path"] or "").strip("/")
            entries = repo.tree(base, recursive=_flag(query, "recursive"))
            if entries is None:
                return self._error(404, "EntryNotFound", "Entry not found", commit=repo.sha)
            return self._json(200, entries)
        served = repo.files.get(unquote(m["file"]))
        if served is None:
            return self._error(404, "EntryNotFound", "Entry not found", commit=repo.sha)
        return self._file(repo, served)

    def _deny(
        self, repo: _Repo | None, repo_id: str, authorized: bool, has_auth: bool
    ) -> int | None:
        """The Hub's refusal for this caller, or None if the request may go on."""
        hub = self.server.hub
        rid = unquote(repo_id)
        if has_auth and not authorized and hub.wrong_token == "invalid":
            # A token the Hub does not know: no error code, and huggingface_hub keeps it an HTTP error.
            return self._error(401, None, "Invalid credentials in Authorization header")
        if repo is None:
            if not has_auth:  # the Hub hides whether a repo exists from anonymous callers
                return self._error(401, "RepoNotFound", "Invalid username or password.")
            return self._error(404, "RepoNotFound", "Repository not found")
        if not has_auth:
            msg = f"Access to model {rid} is restricted. You must have access to it and be authenticated to access it. Please log in."
            return self._error(401, "GatedRepo", msg)
        if not authorized:
            msg = f"Access to model {rid} is restricted and you are not in the authorized list. Visit {hub.endpoint}/{rid} to ask for access."
            return self._error(403, "GatedRepo", msg)
        return None

    def _file(self, repo: _Repo, served: ServedFile) -> int:
        size = served.size
        start, end = 0, size - 1
        status = 200
        if rng := re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "").strip()):
            start = int(rng[1])
            end = min(int(rng[2]), size - 1) if rng[2] else size - 1
            if start >= size or start > end:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return 416
            status = 206
        self.send_response(status)
        self.send_header("X-Repo-Commit", repo.sha)
        self.send_header("ETag", f'"{served.etag}"')
        if served.lfs:  # what the Hub puts on an LFS file's answer, before its CDN redirect
            self.send_header("X-Linked-Etag", f'"{served.sha256}"')
            self.send_header("X-Linked-Size", str(size))
        ctype = "text/plain; charset=utf-8" if served.text else "application/octet-stream"
        self.send_header("Content-Type", ctype)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if self.command == "GET":
            with served.local.open("rb") as fh:
                fh.seek(start)
                remaining = end - start + 1
                while remaining > 0 and (chunk := fh.read(min(remaining, 1 << 20))):
                    self.wfile.write(chunk)
                    remaining -= len(chunk)
        return status

    def _json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> int:
        body = json.dumps(payload).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return status

    def _error(self, status: int, code: str | None, message: str, commit: str | None = None) -> int:
        # huggingface_hub's hf_raise_for_status picks the error class from X-Error-Code and
        # quotes X-Error-Message (the only text a HEAD answer has) and the body's "error".
        headers = {"X-Error-Message": message}
        if code is not None:
            headers["X-Error-Code"] = code
        if commit is not None:  # the Hub names the commit on a missing file (.no_exist cache)
            headers["X-Repo-Commit"] = commit
        return self._json(status, {"error": message}, headers)


def _flag(query: dict[str, list[str]], name: str) -> bool:
    return query.get(name, ["false"])[-1].lower() in ("1", "true")


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a client holding a kept-alive connection must not block shutdown
    hub: GatedHub

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()

    def track(self, conn: socket.socket, open_: bool) -> None:
        with self._conns_lock:
            (self._conns.add if open_ else self._conns.discard)(conn)

    def drop_connections(self) -> None:
        # A pooled keep-alive connection would otherwise still be answered after the hub closed.
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class GatedHub:
    """Serve `repos` (repo id -> local folder) as gated Hub models, open to `token` only.

    `wrong_token` chooses the Hub's answer to a bearer token other than `token`: "no_access" (403
    GatedRepo, a valid account without access; the default) or "invalid" (401, unknown token).
    """

    def __init__(
        self,
        repos: Mapping[str, Path],
        token: str,
        *,
        wrong_token: Literal["no_access", "invalid"] = "no_access",
    ) -> None:
        if not token:
            raise ValueError("the stand-in needs a non-empty token")
        self.token = token
        self.wrong_token = wrong_token
        self._repos = {rid: _Repo.load(rid, Path(folder)) for rid, folder in repos.items()}
        self._lock = threading.Lock()
        self._requests: list[HubRequest] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        """The base URL to put in HF_ENDPOINT ("http://127.0.0.1:PORT")."""
        if self._server is None:
            raise RuntimeError("GatedHub is not running: use it as a context manager")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def requests(self) -> list[HubRequest]:
        """A copy of every request answered so far, in order."""
        with self._lock:
            return list(self._requests)

    def unauthorized(self) -> list[HubRequest]:
        """The recorded requests that did not carry `Authorization: Bearer <token>`."""
        return [r for r in self.requests if not r.authorized]

    def commit_sha(self, repo_id: str) -> str:
        """The fixed commit sha the stand-in reports for `repo_id` (X-Repo-Commit, model_info)."""
        return self._repos[repo_id].sha

    def files(self, repo_id: str) -> dict[str, ServedFile]:
        """The files served for `repo_id`, keyed by their path in the repo."""
        return dict(self._repos[repo_id].files)

    def _record(self, request: HubRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def __enter__(self) -> GatedHub:
        # Port 0: the OS picks a free port, so parallel test runs never collide.
        self._server = _Server(("127.0.0.1", 0))
        self._server.hub = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="hub-standin", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.drop_connections()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._thread = None
