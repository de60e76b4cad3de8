"""labd command line.

labd serve   --config /etc/labd/labd.json     run the API, the reaper and reconcile at start
labd check   --config FILE                    validate the config and exit (0 ok, 2 bad)
labd render  --config FILE --user NAME        print the k3d config a user's cluster would get
labd admin   --url URL --key-file F delete USER | list | routes | status USER
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import urllib.error
import urllib.request
from types import FrameType

from labd.auth import Verifier, sign
from labd.config import LabdConfigError, load_config, read_secret_file
from labd.engines import ROOTLESS
from labd.k3d import K3dError
from labd.render import ClusterValues, cluster_name, render_k3d_config, to_yaml
from labd.server import make_server
from labd.service import LabService


def _serve(config_path: str) -> int:
    cfg = load_config(config_path)
    if cfg.engine == ROOTLESS and os.geteuid() != 0:
        # It creates each student's host user and starts their engine with that user's ids.
        print(
            'labd: engine \'rootless\' needs labd to run as root (or set "engine": "shared")',
            file=sys.stderr,
        )
        return 2
    service = LabService(cfg)
    try:
        service.reconcile()
    except K3dError as err:
        # Without k3d's view labd could double-create clusters; refuse to run.
        print(f"labd: cannot reconcile with k3d at start: {err}", file=sys.stderr)
        return 1
    verifier = Verifier(
        {"session": cfg.session_key, "admin": cfg.admin_key}, cfg.max_clock_skew, host_names=cfg.host_names
    )
    if not cfg.host_names:
        logging.getLogger("labd").warning(
            "hostNames is not set: a request signed for another lab host of this class is accepted here"
        )
    server = make_server(
        service,
        verifier,
        cfg.listen_host,
        cfg.listen_port,
        max_connections=cfg.max_connections,
        request_timeout=cfg.request_timeout,
    )
    service.start_reaper()

    def stop(signum: int, frame: FrameType | None) -> None:
        service.shutdown()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logging.getLogger("labd").info("listening on %s:%d", cfg.listen_host, server.server_address[1])
    server.serve_forever()
    return 0


def _admin(url: str, key_file: str, action: str, user: str | None) -> int:
    key = read_secret_file(key_file, "--key-file")
    method, path = {
        "delete": ("DELETE", f"/v1/users/{user}"),
        "list": ("GET", "/v1/clusters"),
        "routes": ("GET", "/v1/routes"),
        "status": ("GET", f"/v1/users/{user}/status"),
        "stop": ("POST", f"/v1/users/{user}/stop"),
    }[action]
    if action in ("delete", "status", "stop") and not user:
        print(f"labd admin {action}: a USER argument is required", file=sys.stderr)
        return 2
    headers = sign(key, "admin", method, path, "admin")
    request = urllib.request.Request(url.rstrip("/") + path, method=method, headers=headers)  # noqa: S310 (operator-given http URL)
    try:
        with urllib.request.urlopen(request, timeout=600) as response:  # noqa: S310 (operator-given http URL)
            sys.stdout.write(response.read().decode())
            return 0
    except urllib.error.HTTPError as err:
        print(f"labd admin {action}: HTTP {err.code}: {err.read().decode().strip()}", file=sys.stderr)
        return 1
    except urllib.error.URLError as err:
        print(f"labd admin {action}: cannot reach {url}: {err.reason}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="labd", description="per-student k3d clusters behind a signed API")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("serve", "check", "render"):
        p = sub.add_parser(name)
        p.add_argument("--config", default="/etc/labd/labd.json")
        if name == "render":
            p.add_argument("--user", required=True)
    admin = sub.add_parser("admin")
    admin.add_argument("--url", default="http://127.0.0.1:8787")
    admin.add_argument("--key-file", default="/etc/labd/admin.key")
    admin.add_argument("action", choices=["delete", "list", "routes", "status", "stop"])
    admin.add_argument("user", nargs="?")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        if args.command == "serve":
            return _serve(args.config)
        if args.command == "check":
            load_config(args.config)
            print("labd: config ok")
            return 0
        if args.command == "render":
            cfg = load_config(args.config)
            name = cluster_name(cfg.cluster_prefix, args.user)
            values = ClusterValues(
                args.user,
                name,
                cfg.port_base,
                cfg.port_base + 1,
                cfg.port_base + 2,
                cfg.class_name,
                cfg.term,
                cfg.lab_domain,
                cfg.backend_host,
            )
            sys.stdout.write(to_yaml(render_k3d_config(cfg.k3d_template, values)))
            return 0
        return _admin(args.url, args.key_file, args.action, args.user)
    except LabdConfigError as err:
        print(f"labd: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
