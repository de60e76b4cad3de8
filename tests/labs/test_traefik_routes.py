"""Real Traefik on 127.0.0.1 with labd's generated file-provider config.

Two students' "cluster ingress" backends are plain HTTP servers (for Host
routing) and TLS servers with their own certificates (for SNI passthrough):
the certificate the client sees must be the backend's, proving Traefik did not
terminate TLS.
"""

from __future__ import annotations

import datetime
import http.client
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.labs.support import Labd, free_port, wait_for
from tests.labs.traefik_env import find_traefik, traefik_argv

TRAEFIK = find_traefik()
if TRAEFIK is None:
    pytest.skip("traefik not built yet (tools/toolchain.sh traefik)", allow_module_level=True)

DOMAIN = "lab.example.edu"


def free_block(size: int) -> int:
    """A base port whose next `size` ports are free now (labd allocates 3 per student)."""
    for _ in range(200):
        base = free_port()
        if base + size > 65000:
            continue
        socks = []
        try:
            for port in range(base, base + size):
                sock = socket.socket()
                sock.bind(("127.0.0.1", port))
                socks.append(sock)
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise AssertionError("no free port block")


def self_signed(tmp: Path, host: str) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / f"{host}.crt", tmp / f"{host}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_file), str(key_file)


def backend(user: str, port: int, tls: tuple[str, str] | None) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"{user} {'https' if tls else 'http'} {self.headers['Host']}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def stack(tmp_path: Path, labd_factory: list[Labd]) -> Iterator[dict[str, Any]]:
    daemon = Labd(tmp_path / "labd", portBase=free_block(6), portLimit=65535, labDomain=DOMAIN)
    labd_factory.append(daemon)
    daemon.start()
    servers = []
    for user in ("alice", "bob"):
        daemon.request("POST", f"/v1/users/{user}/ensure", user)
        wait_for(lambda u=user: daemon.status(u)["state"] == "running", what=f"{user} running")
        ports = daemon.status(user)["ports"]
        servers.append(backend(user, ports["http"], None))
        servers.append(backend(user, ports["https"], self_signed(tmp_path, f"{user}.{DOMAIN}")))
    web, websecure = free_port(), free_port()
    log = open(tmp_path / "traefik.log", "ab")  # noqa: SIM115 (closed below)
    traefik = subprocess.Popen(
        traefik_argv(str(TRAEFIK), web, websecure, daemon.config["traefik"]["file"]),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield {"labd": daemon, "web": web, "websecure": websecure, "log": tmp_path / "traefik.log"}
    finally:
        traefik.terminate()
        traefik.wait(timeout=15)
        log.close()
        for server in servers:
            server.shutdown()


def http_get(port: int, host: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/", headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.read().decode()
    except OSError:
        return 0, ""
    finally:
        conn.close()


def https_get(port: int, host: str) -> tuple[str, str]:
    """(peer certificate CN, body) through Traefik by SNI."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(4096):
                data += chunk
    except (OSError, ssl.SSLError):
        return "", ""
    assert der is not None
    cn = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    return str(cn), data.decode(errors="replace").split("\r\n\r\n", 1)[-1]


def test_http_by_host_and_https_by_sni_passthrough(stack: dict[str, Any]) -> None:
    web, websecure = stack["web"], stack["websecure"]
    wait_for(lambda: http_get(web, f"alice.{DOMAIN}")[0] == 200, timeout=30, what="traefik routing alice")
    assert http_get(web, f"alice.{DOMAIN}") == (200, f"alice http alice.{DOMAIN}")
    assert http_get(web, f"bob.{DOMAIN}") == (200, f"bob http bob.{DOMAIN}")
    assert http_get(web, f"mallory.{DOMAIN}")[0] == 404
    assert https_get(websecure, f"alice.{DOMAIN}") == (f"alice.{DOMAIN}", f"alice https alice.{DOMAIN}")
    assert https_get(websecure, f"bob.{DOMAIN}") == (f"bob.{DOMAIN}", f"bob https bob.{DOMAIN}")


def test_deleted_student_loses_routes(stack: dict[str, Any]) -> None:
    web, websecure, daemon = stack["web"], stack["websecure"], stack["labd"]
    wait_for(lambda: http_get(web, f"bob.{DOMAIN}")[0] == 200, timeout=30, what="traefik routing bob")
    status, _ = daemon.request("DELETE", "/v1/users/bob", "admin", key_id="admin")
    assert status == 200
    wait_for(lambda: http_get(web, f"bob.{DOMAIN}")[0] == 404, timeout=30, what="bob's route removed")
    assert https_get(websecure, f"bob.{DOMAIN}")[0] != f"bob.{DOMAIN}"
    assert http_get(web, f"alice.{DOMAIN}")[0] == 200
