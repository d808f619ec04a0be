"""The vLLM server process: pid file, log file, port check, readiness and stop.

    handle = start_server("data/models/tiny/base", port=8011, served_name="aria-ft", api_key="k",
                          settings=settings)  # the Settings the caller resolved
    handle.wait_ready(timeout=300)      # polls /health; handle.start_seconds is then measured
    ...                                 # handle.base_url is the OpenAI base URL
    handle.stop()

The command comes from serve.command. The server's pid goes to data/run/vllm-<port>.pid and its
output to data/logs/vllm-<port>.log (also shown in the terminal with `tee`). `stop()` or
`stop_recorded_server` end it: SIGTERM to its process group, SIGKILL after a timeout, pid file
removed. `make serve*` (serve.vllm_server), the demo, the tests and serve.cluster share it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from pydantic import SecretStr

from aria.settings import Settings, server_url
from serve.command import (
    API_SERVER_MODULE,
    Engine,
    ServeCommand,
    ServeError,
    build_command,
    detect_engine,
)

DEFAULT_READY_TIMEOUT_S = 600.0
DEFAULT_STOP_TIMEOUT_S = 30.0


class PortTakenError(ServeError):
    """Something already listens on the port; the message says what, when it is ours."""


# --- pid file, log file, port


def pid_path(settings: Settings, port: int) -> Path:
    """data/run/vllm-<port>.pid: the pid of the vLLM server listening on `port`."""
    return settings.aria_data_dir / "run" / f"vllm-{port}.pid"


def log_path_for(settings: Settings, port: int) -> Path:
    """data/logs/vllm-<port>.log: everything the server printed."""
    return settings.aria_data_dir / "logs" / f"vllm-{port}.log"


def read_pid(path: Path) -> int | None:
    """The pid in a pid file, or None when the file is missing or unreadable."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (and is not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        # /proc/<pid>/stat field 3 is the state; Z means exited but not yet reaped.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def is_vllm_process(pid: int) -> bool:
    """True when the pid runs the vLLM API server (guards against a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return pid_alive(pid)  # no /proc (macOS): trust the pid file
    return API_SERVER_MODULE in cmdline or "vllm" in cmdline


def port_in_use(host: str, port: int) -> bool:
    """True when binding host:port fails, i.e. something already listens there."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def check_port_free(settings: Settings, host: str, port: int) -> None:
    """Raise PortTakenError naming our server (from its pid file) or another process."""
    if not port_in_use(host, port):
        return
    pid = read_pid(pid_path(settings, port))
    if pid is not None and pid_alive(pid) and is_vllm_process(pid):
        raise PortTakenError(
            f"port {port} is taken by our vLLM server (pid {pid}, {pid_path(settings, port)}): "
            "stop it with `make serve-stop`, or set VLLM_PORT to another port"
        )
    raise PortTakenError(
        f"port {port} on {host} is taken by another process (see `ss -ltnp | grep :{port}`): "
        "stop it or set VLLM_PORT to a free port"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free right now (for tests and benches)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


# --- the process


@dataclass
class ServerHandle:
    """A vLLM server process started by `start_server` or `launch`."""

    process: subprocess.Popen
    host: str
    port: int
    served_name: str
    model: str
    api_key: str | None
    log_path: Path
    pid_file: Path | None = None
    started_at: float = field(default_factory=time.monotonic)
    start_seconds: float | None = None  # process start → /health 200, set by wait_ready
    _tee: threading.Thread | None = None

    @property
    def pid(self) -> int:
        """The pid of the API server (its EngineCore children share its process group)."""
        return self.process.pid

    @property
    def root_url(self) -> str:
        """http://host:port, where /health lives."""
        return server_url(self.host, self.port)

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (…/v1)."""
        return f"{self.root_url}/v1"

    def wait_ready(self, timeout: float = DEFAULT_READY_TIMEOUT_S) -> float:
        """Poll /health until it answers 200; return and record the start time in seconds.

        Raises ServeError with the log's last lines if the process dies or `timeout` passes.
        """
        import httpx

        deadline = self.started_at + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServeError(
                    f"the vLLM server exited with code {self.process.returncode} before it was "
                    f"ready; last lines of {self.log_path}:\n{log_tail(self.log_path)}"
                )
            try:
                if httpx.get(f"{self.root_url}/health", timeout=2.0).status_code == 200:
                    self.start_seconds = time.monotonic() - self.started_at
                    return self.start_seconds
            except httpx.HTTPError:
                pass  # not listening yet
            time.sleep(0.5)
        raise ServeError(
            f"the vLLM server was not ready after {timeout:.0f} s; see {self.log_path}:\n"
            f"{log_tail(self.log_path)}"
        )

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> int | None:
        """SIGTERM the server's process group, SIGKILL after `timeout`; remove its pid file."""
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        # The EngineCore children may outlive the API server by a moment; sweep the group.
        _signal_group(self.process.pid, signal.SIGKILL)
        if self._tee is not None:
            self._tee.join(timeout=5)
        if self.pid_file is not None and read_pid(self.pid_file) == self.process.pid:
            self.pid_file.unlink(missing_ok=True)
        return self.process.returncode


def _signal_group(pid: int, sig: int) -> None:
    """Send `sig` to the process group led by `pid` (the server and its EngineCore)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def log_tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log file, or a note that it is empty."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text[-lines:]) or "(empty log)"


def _copy_output(stream: IO[bytes], log: IO[bytes], echo: IO[bytes] | None) -> None:
    """Copy the server's output to its log file (and the terminal) line by line."""
    for line in iter(stream.readline, b""):
        log.write(line)
        log.flush()
        if echo is not None:
            echo.write(line)
            echo.flush()
    log.close()


def launch(
    command: ServeCommand,
    *,
    host: str,
    port: int,
    served_name: str,
    model: str,
    log_path: Path,
    pid_file: Path | None = None,
    extra_env: Mapping[str, str] | None = None,
    tee: bool = False,
) -> ServerHandle:
    """Start `command` in its own process group, its output going to `log_path` (and the
    terminal with `tee`); write `pid_file` when given. Returns at once: call wait_ready."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **command.env, **(extra_env or {})}
    for name in command.unset:
        env.pop(name, None)
    env.setdefault("PYTHONUNBUFFERED", "1")
    log = log_path.open("ab")
    started_at = time.monotonic()
    process = subprocess.Popen(
        command.argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if tee else log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own group: stop() signals the EngineCore children too
    )
    tee_thread = None
    if tee:
        assert process.stdout is not None
        tee_thread = threading.Thread(
            target=_copy_output, args=(process.stdout, log, sys.stdout.buffer), daemon=True
        )
        tee_thread.start()
    else:
        log.close()  # the child holds its own descriptor
    if pid_file is not None:
        from aria.files import atomic_write_text

        atomic_write_text(pid_file, f"{process.pid}\n")
    return ServerHandle(
        process=process,
        host=host,
        port=port,
        served_name=served_name,
        model=model,
        api_key=command.secret,
        log_path=log_path,
        pid_file=pid_file,
        started_at=started_at,
        _tee=tee_thread,
    )


def start_server(
    model: str | Path,
    port: int,
    served_name: str,
    api_key: str | None,
    max_model_len: int = 4096,
    extra_env: Mapping[str, str] | None = None,
    log_path: str | Path | None = None,
    *,
    host: str = "127.0.0.1",
    kv_cache_gib: int | None = None,
    engine: Engine | None = None,
    settings: Settings,
) -> ServerHandle:
    """Start a vLLM server on `model` in the background (same command as `make serve`), with
    `settings` (the caller's) for what the arguments do not set: engine flags, data folders.

    Returns immediately; call `.wait_ready(timeout)` then use `.base_url`, and `.stop()` at the end
    (which removes the pid file written at data/run/vllm-<port>.pid). Raises ModelMissingError or
    PortTakenError before starting anything.
    """
    update: dict = {
        "vllm_model": str(model),
        "vllm_port": port,
        "vllm_host": host,
        "vllm_served_name": served_name,
        "vllm_api_key": SecretStr(api_key) if api_key else None,
        "vllm_max_model_len": max_model_len,
    }
    if kv_cache_gib is not None:
        update["vllm_cpu_kvcache_space"] = kv_cache_gib
    cfg = settings.model_copy(update=update)
    command = build_command(cfg, "base", engine or detect_engine())
    check_port_free(cfg, host, port)
    return launch(
        command,
        host=host,
        port=port,
        served_name=served_name,
        model=str(model),
        log_path=Path(log_path) if log_path else log_path_for(cfg, port),
        extra_env=extra_env,
        # The pid file lets the benchmark find the server's process tree and gate its memory
        # (serve.memory), for the demo's servers as for `make serve-ft-bg`'s.
        pid_file=pid_path(cfg, port),
    )


def stop_recorded_server(
    settings: Settings, port: int, timeout: float = DEFAULT_STOP_TIMEOUT_S
) -> str:
    """Stop the server recorded in data/run/vllm-<port>.pid; return what happened, in words."""
    path = pid_path(settings, port)
    pid = read_pid(path)
    if pid is None:
        others = (
            sorted(p.name for p in path.parent.glob("vllm-*.pid")) if path.parent.exists() else []
        )
        hint = f" (other pid files: {', '.join(others)}; set VLLM_PORT)" if others else ""
        return f"no server recorded in {path}: nothing to stop{hint}"
    if not pid_alive(pid) or not is_vllm_process(pid):
        path.unlink(missing_ok=True)
        return f"pid {pid} in {path} is not running any more: removed the stale pid file"
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    how = "stopped with SIGTERM"
    if pid_alive(pid):
        _signal_group(pid, signal.SIGKILL)
        how = f"did not stop within {timeout:.0f} s: killed with SIGKILL"
    path.unlink(missing_ok=True)
    return f"vLLM server pid {pid} on port {port} {how}"
