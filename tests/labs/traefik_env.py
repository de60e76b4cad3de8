"""Finding the toolchain's Traefik, its command line for labd's routes, and the clients the routing tests send."""

from __future__ import annotations

import glob
import os
import shutil


def find_traefik() -> str | None:
    """The toolchain's traefik: the current toolchain dir first, then PATH, then the newest cached build."""
    current = os.environ.get("CLASSROOM_TOOLCHAIN_DIR")
    if current and os.access(os.path.join(current, "bin", "traefik"), os.X_OK):
        return os.path.join(current, "bin", "traefik")
    cache = os.environ.get("CLASSROOM_CACHE", os.path.expanduser("~/.cache/classroom"))
    built = sorted(glob.glob(os.path.join(cache, "toolchain-*", "bin", "traefik")), key=os.path.getmtime)
    return shutil.which("traefik") or (built[-1] if built else None)


def traefik_argv(binary: str, web: int, websecure: int, routes_file: str) -> list[str]:
    """Traefik on 127.0.0.1 with labd's file-provider routes (watched), nothing phoned home."""
    return [
        binary,
        f"--entryPoints.web.address=127.0.0.1:{web}",
        f"--entryPoints.websecure.address=127.0.0.1:{websecure}",
        f"--providers.file.filename={routes_file}",
        "--providers.file.watch=true",
        "--log.level=DEBUG",
        "--global.checkNewVersion=false",
        "--global.sendAnonymousUsage=false",
    ]


# Run inside the engine's namespace: one HTTP GET with a Host header -> {"status", "body"}
HTTP_CLIENT = """
import http.client, json, sys
port, host = int(sys.argv[1]), sys.argv[2]
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
try:
    conn.request("GET", "/", headers={"Host": host})
    r = conn.getresponse()
    print(json.dumps({"status": r.status, "body": r.read().decode(errors="replace")}))
except OSError as err:
    print(json.dumps({"status": 0, "body": str(err)}))
"""

# A real ClientHello with SNI, sent raw; prints what came back (hex) until EOF or time-out.
TLS_CLIENT = """
import json, socket, ssl, sys
port, host = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context()
incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = ctx.wrap_bio(incoming, outgoing, server_hostname=host)
try:
    tls.do_handshake()
except ssl.SSLWantReadError:
    pass
hello = outgoing.read()
got = b""
try:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(hello)
        while chunk := sock.recv(4096):
            got += chunk
except OSError:
    pass
print(json.dumps({"hello": hello[:5].hex(), "got": got.hex()}))
"""
