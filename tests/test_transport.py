"""The benchmark's streaming client (evaluation.transport) against a real socket that misbehaves."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from evaluation.transport import send_chat

CHUNKS = [
    {"choices": [{"delta": {"content": "Lombalgie"}, "finish_reason": None}]},
    {"choices": [{"delta": {"content": " mécanique"}, "finish_reason": "stop"}]},
    {"choices": [], "usage": {"completion_tokens": 3}},
]
SSE = "".join(f"data: {json.dumps(c)}\n\n" for c in CHUNKS) + "data: [DONE]\n\n"


def read_request(conn: socket.socket) -> None:
    """Read one HTTP request (head and Content-Length body), so that what follows is an answer."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += conn.recv(65536)


def drop(conn: socket.socket) -> None:
    """Read the request, then close without a byte of answer."""
    read_request(conn)


def answer(conn: socket.socket) -> None:
    """A whole SSE answer, delimited by the connection's close."""
    read_request(conn)
    head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
    conn.sendall((head + SSE).encode())


def cut_after_first_chunk(conn: socket.socket) -> None:
    """The head and the first SSE event of a chunked answer, then the connection drops."""
    read_request(conn)
    event = f"data: {json.dumps(CHUNKS[0])}\n\n".encode()
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    conn.sendall(head + f"{len(event):x}\r\n".encode() + event + b"\r\n")


class ScriptedServer:
    """A listening socket that treats its n-th connection with script[n] (later ones: drop)."""

    def __init__(self, script: list[Callable[[socket.socket], None]]) -> None:
        self.script, self.connections = script, 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1/chat/completions"
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            handle = self.script[self.connections] if self.connections < len(self.script) else drop
            self.connections += 1
            with conn:
                handle(conn)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def scripted():
    servers: list[ScriptedServer] = []

    def start(*script: Callable[[socket.socket], None]) -> ScriptedServer:
        servers.append(ScriptedServer(list(script)))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def chat(url: str, **kwargs) -> dict:
    async def go() -> dict:
        async with httpx.AsyncClient() as client:
            return await send_chat(client, url, {"model": "aria-ft"}, 10.0, **kwargs)

    return asyncio.run(go())


def test_a_connection_dropped_before_any_answer_is_sent_again(scripted):
    server = scripted(drop, answer)
    started = time.perf_counter()
    out = chat(server.url, backoff_s=1.5)
    wall_ms = (time.perf_counter() - started) * 1000
    assert out["status"] == "ok", out["error"]
    assert out["content"] == "Lombalgie mécanique" and out["finish_reason"] == "stop"
    assert out["attempts"] == 2 and server.connections == 2
    # The 1.5 s backoff was waited, but the latency is the answered try's alone.
    assert wall_ms >= 1500
    assert out["e2e_ms"] < 1500 and out["ttft_ms"] <= out["e2e_ms"]


def test_one_attempt_records_the_dropped_connection(scripted):
    server = scripted(drop, answer)
    out = chat(server.url, attempts=1)
    assert out["status"] == "connection_error" and out["attempts"] == 1
    assert server.connections == 1


def test_a_stream_cut_after_its_first_byte_is_never_sent_again(scripted):
    server = scripted(cut_after_first_chunk, answer)
    out = chat(server.url, backoff_s=0.01)
    assert out["status"] == "connection_error" and out["http_status"] == 200
    assert out["content"] is None and out["attempts"] == 1
    time.sleep(0.3)  # a re-sent request would reach the server meanwhile
    assert server.connections == 1


def test_retries_are_bounded(scripted):
    server = scripted(drop, drop, drop, answer)
    out = chat(server.url, attempts=3, backoff_s=0.01)
    assert out["status"] == "connection_error" and out["attempts"] == 3
    assert server.connections == 3
