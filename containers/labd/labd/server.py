"""labd's HTTP API (stdlib ThreadingHTTPServer).

Routes (every one but /healthz is signed, see auth.py):

  POST   /v1/users/<user>/sessions              {"session": ID, "host": H}  session open -> ensure (async)
  DELETE /v1/users/<user>/sessions/<id>                                    session close
  POST   /v1/users/<user>/ensure                                           create or start (async, 202)
  POST   /v1/users/<user>/stop                                             stop (sync)
  GET    /v1/users/<user>/status
  GET    /v1/users/<user>/kubeconfig                                       409 unless running
  PUT    /v1/hosts/<host>/sessions              {"sessions": [[ID, USER]...]}  login-server sync
  DELETE /v1/users/<user>                                                  admin: delete cluster
  GET    /v1/clusters                                                      admin: list
  GET    /v1/routes                                                        admin: Traefik dynamic config
  GET    /healthz

The session key may act only for the user it signed for (the path user must
equal the signed user) and only on the non-admin routes; the admin key may do
everything. Authorization is decided before any state is read or changed.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import re
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from labd.auth import HEADER_RESPONSE_SIGNATURE, AuthError, Caller, Verifier
from labd.k3d import K3dError
from labd.service import Conflict, LabService, NotFound

log = logging.getLogger("labd.http")

USER_RE = r"[a-z_][a-z0-9_.-]{0,31}"
SESSION_RE = r"[A-Za-z0-9_.:@-]{1,128}"
HOST_RE = r"[A-Za-z0-9_.-]{1,64}"
MAX_BODY = 64 * 1024
# Request line plus headers of one request: a signed request needs well under 2 KiB.
MAX_HEAD = 16 * 1024
_LENGTH_RE = re.compile(r"[0-9]{1,10}")
BUSY_BODY = b'{"error": "labd is busy: too many open connections; retry"}\n'
BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: " + str(len(BUSY_BODY)).encode() + b"\r\nRetry-After: 1\r\n"
    b"Connection: close\r\n\r\n" + BUSY_BODY
)

# (method, pattern, operation, admin-only)
ROUTES: list[tuple[str, re.Pattern[str], str, bool]] = [
    ("POST", re.compile(rf"^/v1/users/(?P<user>{USER_RE})/sessions$"), "session-open", False),
    (
        "DELETE",
        re.compile(rf"^/v1/users/(?P<user>{USER_RE})/sessions/(?P<session>{SESSION_RE})$"),
        "session-close",
        False,
    ),
    ("POST", re.compile(rf"^/v1/users/(?P<user>{USER_RE})/ensure$"), "ensure", False),
    ("POST", re.compile(rf"^/v1/users/(?P<user>{USER_RE})/stop$"), "stop", False),
    ("GET", re.compile(rf"^/v1/users/(?P<user>{USER_RE})/status$"), "status", False),
    ("GET", re.compile(rf"^/v1/users/(?P<user>{USER_RE})/kubeconfig$"), "kubeconfig", False),
    ("PUT", re.compile(rf"^/v1/hosts/(?P<host>{HOST_RE})/sessions$"), "host-sync", False),
    ("DELETE", re.compile(rf"^/v1/users/(?P<user>{USER_RE})$"), "delete", True),
    ("GET", re.compile(r"^/v1/clusters$"), "list", True),
    ("GET", re.compile(r"^/v1/routes$"), "routes", True),
]


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ClientGone(Exception):
    """The client closed, stalled past its deadline or sent less than it announced: nobody to answer."""


def body_length(values: list[str] | None, transfer_encoding: list[str] | None) -> int:
    """The body length a request announces, decided before a byte of the body is read.

    Only one plain decimal Content-Length is accepted: int() alone takes "-1" (and
    rfile.read(-1) reads until the client closes), "+5", " 5", "1_0" and non-ASCII
    digits. Two Content-Length headers, even equal ones, are refused: proxies
    disagree on which one counts. No Transfer-Encoding at all: labd's callers
    always know their (small) body, and a chunked body has no bound up front.
    """
    if transfer_encoding:
        raise HttpError(400, "Transfer-Encoding is not accepted; send the body with one Content-Length")
    if not values:
        return 0
    if len(values) > 1:
        raise HttpError(400, "more than one Content-Length header")
    text = values[0]
    if not _LENGTH_RE.fullmatch(text):
        raise HttpError(400, "Content-Length must be a non-negative decimal number")
    length = int(text)
    if length > MAX_BODY:
        raise HttpError(413, f"body larger than {MAX_BODY} bytes")
    return length


class _HeadBudget:
    """The handler's rfile: at most MAX_HEAD bytes of request line and headers per request.

    http.server allows 64 KiB per line and 100 header lines, about 6.5 MB a
    connection; times the connection limit that would be labd's memory.
    """

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self.remaining = MAX_HEAD

    def readline(self, size: int = -1) -> bytes:
        if self.remaining <= 0:
            raise http.client.LineTooLong("request head")
        limit = self.remaining + 1 if size < 0 else min(size, self.remaining + 1)
        line: bytes = self._raw.readline(limit)
        self.remaining -= len(line)
        if self.remaining < 0:
            raise http.client.LineTooLong("request head")
        return line

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            raise ValueError("labd never reads a body without a length")
        data: bytes = self._raw.read(size)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def authorize(caller: Caller, admin_only: bool, params: dict[str, str]) -> None:
    if caller.key_id == "admin":
        return
    if admin_only:
        raise HttpError(403, "this operation needs the admin key")
    # A host sync is signed for the pseudo-user "host:<name>": only root on
    # the login server holds the session key, and it may speak for the host.
    subject = f"host:{params['host']}" if "host" in params else params.get("user", "")
    if caller.user != subject:
        raise HttpError(403, f"signed for {caller.user!r} but the request is about {subject!r}")


def make_handler(
    service: LabService, verifier: Verifier, request_timeout: float = 10.0
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "labd"
        sys_version = ""
        protocol_version = "HTTP/1.1"
        # Each socket read or write; the whole request has its deadline from the server's watchdog.
        timeout = request_timeout
        server: LabdHTTPServer

        def log_message(self, format: str, *args: Any) -> None:
            log.info("%s %s", self.address_string(), format % args)

        def setup(self) -> None:
            super().setup()
            self._budget = _HeadBudget(self.rfile)
            self.rfile = self._budget  # type: ignore[assignment]

        def handle_one_request(self) -> None:
            # From the first byte of the request line to the last byte of the body
            # a client has request_timeout, however slowly it trickles: a
            # slowloris cannot keep a handler. An idle keep-alive connection ends
            # the same way.
            self._budget.remaining = MAX_HEAD
            self.server.watch(self.connection, time.monotonic() + request_timeout)
            try:
                super().handle_one_request()
            except http.client.LineTooLong:
                self.close_connection = True
                self._try(lambda: self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large"))
            except (ClientGone, OSError):
                self.close_connection = True
            finally:
                self.server.unwatch(self.connection)

        def _try(self, action: Any) -> None:
            try:
                action()
            except OSError:
                self.close_connection = True

        def _send(
            self, status: int, body: Any, content_type: str = "application/json", caller: Caller | None = None
        ) -> None:
            data = body.encode() if isinstance(body, str) else json.dumps(body, sort_keys=True).encode() + b"\n"
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            if caller is not None:
                # Signed for the request it answers: the hook writes nothing into a home
                # (a kubeconfig) that a proxy or an impostor at this address made up.
                self.send_header(HEADER_RESPONSE_SIGNATURE, verifier.sign_response(caller, status, data))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)

        def _handle(self) -> None:
            self._caller: Caller | None = None  # one handler serves every request of a keep-alive connection
            try:
                status, body, ctype = self._dispatch()
            except HttpError as err:
                status, body, ctype = err.status, {"error": str(err)}, "application/json"
            except AuthError as err:
                status, body, ctype = 401, {"error": str(err)}, "application/json"
            except NotFound as err:
                status, body, ctype = 404, {"error": str(err)}, "application/json"
            except Conflict as err:
                status, body, ctype = 409, {"error": str(err)}, "application/json"
            except K3dError as err:
                status, body, ctype = 502, {"error": str(err)}, "application/json"
            self._try(lambda: self._send(status, body, ctype, self._caller))

        def _read_body(self) -> bytes:
            try:
                length = body_length(self.headers.get_all("Content-Length"), self.headers.get_all("Transfer-Encoding"))
            except HttpError:
                # The body was not read, so the connection cannot carry another request.
                self.close_connection = True
                raise
            body = self.rfile.read(length) if length else b""
            if len(body) != length:
                raise ClientGone(f"body ended after {len(body)} of {length} bytes")
            # Read in full: what follows (k3d, perhaps minutes) is not the client's deadline.
            self.server.unwatch(self.connection)
            return body

        def _dispatch(self) -> tuple[int, Any, str]:
            body = self._read_body()
            path = self.path
            if path == "/healthz" and self.command == "GET":
                return 200, {"ok": True}, "application/json"
            route_path = path.split("?", 1)[0]
            found = [
                (m, op, admin)
                for method, pattern, op, admin in ROUTES
                if method == self.command and (m := pattern.match(route_path))
            ]
            if not found:
                raise HttpError(404, f"no route {self.command} {route_path}")
            match, op, admin_only = found[0]
            # Authenticate over the exact bytes received, then authorize, and
            # only then look at the body or any state.
            caller = verifier.verify(self.command, path, {k: v for k, v in self.headers.items()}, body)
            self._caller = caller
            params = match.groupdict()
            authorize(caller, admin_only, params)
            return self._operate(op, params, body)

        def _json_body(self, body: bytes) -> dict[str, Any]:
            try:
                data = json.loads(body or b"{}")
            except json.JSONDecodeError:
                raise HttpError(400, "body is not JSON") from None
            if not isinstance(data, dict):
                raise HttpError(400, "body must be a JSON object")
            return data

        def _operate(self, op: str, params: dict[str, str], body: bytes) -> tuple[int, Any, str]:
            user = params.get("user", "")
            access_end = service.cfg.access_end
            if op in ("session-open", "ensure") and access_end is not None and time.time() >= access_end:
                # The term is over: nothing starts again. Stop, status and close still work.
                raise HttpError(403, "the term's access has ended; no lab cluster starts after it")
            if op in ("session-open", "ensure") and not service.in_roster(user):
                raise HttpError(403, f"user {user!r} is not on this lab's roster")
            if op == "session-open":
                data = self._json_body(body)
                session, host = str(data.get("session", "")), str(data.get("host", ""))
                if not re.fullmatch(SESSION_RE, session) or not re.fullmatch(HOST_RE, host):
                    raise HttpError(400, "body needs 'session' and 'host' identifiers")
                return 202, service.open_session(user, session, host), "application/json"
            if op == "session-close":
                return 200, service.close_session(user, params["session"]), "application/json"
            if op == "ensure":
                service.ensure_async(user)
                return 202, service.status(user), "application/json"
            if op == "stop":
                return 200, service.stop(user), "application/json"
            if op == "status":
                return 200, service.status(user), "application/json"
            if op == "kubeconfig":
                return 200, service.kubeconfig(user), "application/yaml"
            if op == "host-sync":
                data = self._json_body(body)
                raw = data.get("sessions")
                if not isinstance(raw, list) or not all(
                    isinstance(p, list)
                    and len(p) == 2
                    and re.fullmatch(SESSION_RE, str(p[0]))
                    and re.fullmatch(USER_RE, str(p[1]))
                    for p in raw
                ):
                    raise HttpError(400, "'sessions' must be a list of [session-id, user] pairs")
                return 200, service.sync_host(params["host"], [(str(s), str(u)) for s, u in raw]), "application/json"
            if op == "delete":
                return 200, service.delete(user), "application/json"
            if op == "list":
                return 200, {"clusters": service.list_all()}, "application/json"
            if op == "routes":
                return 200, service.routes_yaml(), "application/yaml"
            raise HttpError(500, f"operation {op} has no handler")

        def do_GET(self) -> None:
            self._handle()

        def do_POST(self) -> None:
            self._handle()

        def do_PUT(self) -> None:
            self._handle()

        def do_DELETE(self) -> None:
            self._handle()

    return Handler


class LabdHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with a bound on connections and a deadline for each request.

    A connection beyond max_connections is answered 503 at once, from the
    accepting thread, and closed: a flood costs labd neither threads nor
    memory beyond the bound, and callers (the hook retries 5xx) come back.
    A watchdog shuts down the socket of any request not received in full
    within request_timeout, which ends its handler.
    """

    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        max_connections: int,
        request_timeout: float,
    ) -> None:
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self._deadlines: dict[socket.socket, float] = {}
        self._deadline_lock = threading.Lock()
        self._tick = min(0.5, request_timeout / 4)
        super().__init__(address, handler)
        self._watchdog = threading.Thread(target=self._expire, name="labd-deadlines", daemon=True)
        self._watchdog.start()

    def watch(self, sock: socket.socket, deadline: float) -> None:
        with self._deadline_lock:
            self._deadlines[sock] = deadline

    def unwatch(self, sock: socket.socket) -> None:
        with self._deadline_lock:
            self._deadlines.pop(sock, None)

    def _expire(self) -> None:
        while True:
            time.sleep(self._tick)
            now = time.monotonic()
            with self._deadline_lock:
                late = [s for s, deadline in self._deadlines.items() if deadline <= now]
                for sock in late:
                    del self._deadlines[sock]
            for sock in late:
                with contextlib.suppress(OSError):  # already closed by its handler
                    sock.shutdown(socket.SHUT_RDWR)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse(self, request: socket.socket) -> None:
        try:
            request.setblocking(False)
            request.send(BUSY_RESPONSE)
        except OSError:
            pass
        self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.warning("connection from %s failed", client_address, exc_info=True)


def make_server(
    service: LabService,
    verifier: Verifier,
    host: str,
    port: int,
    max_connections: int = 64,
    request_timeout: float = 10.0,
) -> LabdHTTPServer:
    return LabdHTTPServer(
        (host, port), make_handler(service, verifier, request_timeout), max_connections, request_timeout
    )
