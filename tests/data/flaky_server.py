"""A real HTTP server on 127.0.0.1 that misbehaves on cue, for the download tests.

Each file has a :class:`Plan`: its content, its ``ETag`` (or none), and the behaviour of each
request in turn (the last one repeats). Behaviours are those of real networks and servers: a
connection dropped mid-stream with or without ``Content-Length``, a chunked stream cut off, a
server that ignores ``Range``, one that stalls, one that trickles, error statuses. Range and
If-Range are honoured like a static file server does. Every byte of body sent is counted, so a
test can say how much a resume re-fetched.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

FULL, CUT, CUT_NO_LENGTH, CHUNKED_CUT, IGNORE_RANGE, STALL, SLOW = (
    "full",
    "cut",
    "cut-no-length",
    "chunked-cut",
    "ignore-range",
    "stall",
    "slow",
)
CHANGE = "change"  # serve like CUT, then replace the content (and its ETag) with Plan.next_content


@dataclass
class Plan:
    content: bytes
    steps: list[str | int] = field(default_factory=lambda: [FULL])  # a behaviour, or an HTTP error status
    etag: str | None = '"v1"'
    cut: int = 10  # body bytes sent before a cut or a stall
    next_content: bytes = b""
    retry_after: str = "7"  # sent with 429 and 503
    seen: list[str | None] = field(default_factory=list)  # the Range header of each request
    sent: int = 0  # body bytes sent, all requests together

    def step(self) -> str | int:
        return self.steps[min(len(self.seen) - 1, len(self.steps) - 1)]


class FlakyServer:
    def __init__(self) -> None:
        self.plans: dict[str, Plan] = {}
        self.release = threading.Event()  # ends every stall
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                self.close_connection = True
                plan = server.plans.get(self.path)
                if plan is None:
                    self.send_error(404)
                    return
                plan.seen.append(self.headers.get("Range"))
                server.respond(self, plan, plan.step())

        class Quiet(http.server.ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a client that hangs up mid-body (Ctrl-C, a timeout) is what the tests cause

        self.httpd = Quiet(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def serve(self, name: str, plan: Plan) -> str:
        self.plans[f"/{name}"] = plan
        return f"{self.base}/{name}"

    def respond(self, handler: http.server.BaseHTTPRequestHandler, plan: Plan, step: str | int) -> None:
        if isinstance(step, int):
            handler.send_response(step)
            if step in (429, 503):
                handler.send_header("Retry-After", plan.retry_after)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        body, start = plan.content, 0
        asked, condition = handler.headers.get("Range"), handler.headers.get("If-Range")
        if asked and step != IGNORE_RANGE and (condition is None or condition == plan.etag):
            start = int(asked.removeprefix("bytes=").rstrip("-"))
            if start >= len(body):
                handler.send_response(416)
                handler.send_header("Content-Range", f"bytes */{len(body)}")
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            handler.send_response(200)
        if plan.etag:
            handler.send_header("ETag", plan.etag)
        payload = body[start:]
        if step == CHUNKED_CUT:
            handler.send_header("Transfer-Encoding", "chunked")
        elif step != CUT_NO_LENGTH:
            handler.send_header("Content-Length", str(len(payload)))
        handler.send_header("Connection", "close")
        handler.end_headers()
        if step == CHANGE:
            plan.content, plan.etag = plan.next_content, (None if plan.etag is None else '"v2"')
        if step in (CUT, CUT_NO_LENGTH, CHANGE):
            self.send(handler, plan, payload[: plan.cut])
        elif step == CHUNKED_CUT:
            piece = payload[: plan.cut]
            plan.sent += len(piece)  # counted first, as in send()
            handler.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")  # no final 0-size chunk
        elif step == STALL:
            self.send(handler, plan, payload[: plan.cut])
            handler.wfile.flush()
            self.release.wait(30)
        elif step == SLOW:
            for offset in range(0, len(payload), max(len(payload) // 8, 1)):
                self.send(handler, plan, payload[offset : offset + max(len(payload) // 8, 1)])
                handler.wfile.flush()
                self.release.wait(0.005)  # a trickle: never silent for as long as the client's timeout
        else:
            self.send(handler, plan, payload)

    @staticmethod
    def send(handler: http.server.BaseHTTPRequestHandler, plan: Plan, data: bytes) -> None:
        # counted before the write: the client can read the last byte and the test read the count
        # before this thread returns from write (every count a test checks is of bytes written whole)
        plan.sent += len(data)
        handler.wfile.write(data)


@contextmanager
def flaky_server() -> Iterator[FlakyServer]:
    server = FlakyServer()
    thread = threading.Thread(target=server.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.httpd.shutdown()
        server.httpd.server_close()
