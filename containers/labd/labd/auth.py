"""Request signing shared by labd and its callers.

A request is authentic when its HMAC-SHA256 over a canonical string verifies
under one of labd's two keys. The canonical string binds everything an
attacker could want to change or reuse: the key id (so a session signature is
never read as an admin one), method, path with query, the user the request is
made for, a timestamp, a random nonce, the SHA-256 of the body, and the lab
host the request is for (the URL's host[:port], lower case; sent as X-Labd-Host):
every lab host of a class holds the same session key, so without it a request
captured on its way to one lab host would be accepted by another.

The session hook on the login server carries its own copy of this code (it
must run with nothing but the system python3); the tests sign with one and
verify with the other, so the two cannot drift apart silently.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass

SCHEME = "labd-v2"
HEADER_KEY = "X-Labd-Key"
HEADER_USER = "X-Labd-User"
HEADER_TIME = "X-Labd-Time"
HEADER_NONCE = "X-Labd-Nonce"
HEADER_SIGNATURE = "X-Labd-Signature"
HEADER_HOST = "X-Labd-Host"
KEY_IDS = ("session", "admin")
_NONCE_RE = re.compile(r"^[0-9a-f]{32,64}\Z")


def canonical(
    key_id: str, method: str, path: str, user: str, timestamp: str, nonce: str, body: bytes, host: str = ""
) -> bytes:
    body_hash = hashlib.sha256(body).hexdigest()
    return "\n".join([SCHEME, key_id, method.upper(), path, user, timestamp, nonce, body_hash, host.lower()]).encode()


def sign(
    key: bytes,
    key_id: str,
    method: str,
    path: str,
    user: str,
    body: bytes = b"",
    now: float | None = None,
    nonce: str | None = None,
    host: str = "",
) -> dict[str, str]:
    """Headers that authenticate one request, for the lab host `host` (host[:port] of its URL)."""
    timestamp = str(int(time.time() if now is None else now))
    nonce = nonce or secrets.token_hex(16)
    mac = hmac.new(key, canonical(key_id, method, path, user, timestamp, nonce, body, host), hashlib.sha256)
    headers = {
        HEADER_KEY: key_id,
        HEADER_USER: user,
        HEADER_TIME: timestamp,
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: mac.hexdigest(),
    }
    if host:
        headers[HEADER_HOST] = host.lower()
    return headers


HEADER_RESPONSE_SIGNATURE = "X-Labd-Response-Signature"
RESPONSE_SCHEME = "labd-v1-response"


def response_canonical(key_id: str, request_nonce: str, status: int, body: bytes) -> bytes:
    """What labd signs in an answer: bound to the request (its nonce), so no answer can be replayed
    to another request, and to the status and exact body bytes. The hook verifies it before it
    writes anything it got from labd into a student's home."""
    return "\n".join(
        [RESPONSE_SCHEME, key_id, request_nonce, str(int(status)), hashlib.sha256(body).hexdigest()]
    ).encode()


def sign_response(key: bytes, key_id: str, request_nonce: str, status: int, body: bytes) -> str:
    return hmac.new(key, response_canonical(key_id, request_nonce, status, body), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Caller:
    key_id: str
    user: str
    nonce: str = ""


class AuthError(Exception):
    """Authentication failed (HTTP 401); the message is safe to return."""


class Verifier:
    """Checks signatures, freshness and single use of nonces.

    Nonces are remembered for twice the allowed clock skew, which is exactly as
    long as a captured request could still pass the freshness check. After a
    restart the in-memory nonce set is empty, so requests stamped before the
    process started are refused: a replay across a restart would otherwise
    slip through.
    """

    def __init__(
        self,
        keys: Mapping[str, bytes],
        max_skew: float,
        started_at: float | None = None,
        host_names: Collection[str] = (),
    ) -> None:
        self._keys = dict(keys)
        self._host_names = frozenset(name.lower() for name in host_names)
        self._max_skew = max_skew
        self._started_at = int(time.time() if started_at is None else started_at)
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def verify(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes, now: float | None = None
    ) -> Caller:
        now = time.time() if now is None else now
        # Header names are case-insensitive in HTTP (and lower-case in HTTP/2).
        lowered = {name.lower(): value for name, value in headers.items()}
        values = {
            h: lowered.get(h.lower()) for h in (HEADER_KEY, HEADER_USER, HEADER_TIME, HEADER_NONCE, HEADER_SIGNATURE)
        }
        missing = [h for h, v in values.items() if not v]
        if missing:
            raise AuthError(f"missing authentication header(s): {', '.join(missing)}")
        key_id = str(values[HEADER_KEY])
        user = str(values[HEADER_USER])
        stamp = str(values[HEADER_TIME])
        nonce = str(values[HEADER_NONCE])
        signature = str(values[HEADER_SIGNATURE])
        host = str(lowered.get(HEADER_HOST.lower()) or "").lower()
        key = self._keys.get(key_id)
        if key is None:
            raise AuthError(f"unknown key id {key_id!r}; expected one of {', '.join(sorted(self._keys))}")
        if not stamp.isdigit() or not _NONCE_RE.match(nonce):
            raise AuthError("malformed timestamp or nonce")
        expected = hmac.new(key, canonical(key_id, method, path, user, stamp, nonce, body, host), hashlib.sha256)
        if not hmac.compare_digest(expected.hexdigest(), signature.lower()):
            raise AuthError("bad signature")
        if not self.for_this_host(key_id, host):
            raise AuthError(
                f"signed for lab host {host or '(none)'!r}, which is not this labd "
                f"({', '.join(sorted(self._host_names))})"
            )
        when = int(stamp)
        if abs(now - when) > self._max_skew:
            raise AuthError(f"stale request: timestamp {when} is more than {self._max_skew:g}s from labd's clock")
        if when < self._started_at:
            raise AuthError("request signed before labd started (possible replay across a restart)")
        with self._lock:
            self._prune(now)
            if nonce in self._seen:
                raise AuthError("replayed request (nonce already used)")
            self._seen[nonce] = now + 2 * self._max_skew
        return Caller(key_id=key_id, user=user, nonce=nonce)

    def for_this_host(self, key_id: str, host: str) -> bool:
        """A session signature must name one of this labd's host names (when it has any).

        An admin signature may name none: the administrator's tools run on the
        lab host itself (labhost-cluster.py, `labd admin`) and reach it as
        127.0.0.1, and the admin key never leaves the lab hosts and Pulumi state.
        """
        if not self._host_names:
            return True
        if not host:
            return key_id == "admin"
        bare = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return host in self._host_names or bare in self._host_names

    def sign_response(self, caller: Caller, status: int, body: bytes) -> str:
        """The answer's signature with the key the caller authenticated with."""
        return sign_response(self._keys[caller.key_id], caller.key_id, caller.nonce, status, body)

    def _prune(self, now: float) -> None:
        if len(self._seen) < 1024:
            return
        for nonce, expiry in list(self._seen.items()):
            if expiry < now:
                del self._seen[nonce]


def webhook_signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """Signature a webhook receiver checks: HMAC-SHA256 over "<timestamp>.<body>"."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
