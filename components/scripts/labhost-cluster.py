"""Create (stopped) or delete one student's k3d cluster through labd's admin API.

Installed on each lab host by LabHost and run there by one Pulumi
`remote.Command` per student:

    lab-cluster --config /etc/labd/labd.json create USER   # idempotent
    lab-cluster --config /etc/labd/labd.json delete USER

`create` leaves an existing cluster alone (running or stopped: a student's
work is never reset by `pulumi up`); a new one is created through labd
(`ensure`, which also calls the lab's init webhook) and stopped again, so it
costs disk but no CPU until the student logs in. Stdlib only (host python3).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from labd.auth import sign  # installed next to this script by labhost-install


class Labd:
    def __init__(self, config_path: str) -> None:
        with open(config_path, encoding="utf-8") as handle:
            config = json.load(handle)
        host, _, port = config.get("listen", "127.0.0.1:8787").rpartition(":")
        host = "127.0.0.1" if host in ("0.0.0.0", "", "::", "[::]") else host
        self.url = f"http://{host}:{port}"
        with open(config["adminKeyFile"], "rb") as handle:
            self.key = handle.read().strip()
        self.timeout = float(config.get("k3dTimeout", 300)) + 60

    def call(self, method: str, path: str) -> tuple[int, Any]:
        headers = sign(self.key, "admin", method, path, "admin")
        request = urllib.request.Request(self.url + path, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(errors="replace").strip()

    def status(self, user: str) -> dict[str, Any]:
        code, body = self.call("GET", f"/v1/users/{user}/status")
        if code != 200:
            raise SystemExit(f"lab-cluster: labd status {user}: HTTP {code}: {body}")
        return dict(body)


def create(labd: Labd, user: str) -> dict[str, Any]:
    status = labd.status(user)
    if status["state"] in ("running", "stopped"):
        return {"user": user, "action": "kept", "state": status["state"], "cluster": status.get("cluster")}
    code, body = labd.call("POST", f"/v1/users/{user}/ensure")
    if code not in (200, 202):
        raise SystemExit(f"lab-cluster: labd ensure {user}: HTTP {code}: {body}")
    deadline = time.monotonic() + labd.timeout
    while True:
        status = labd.status(user)
        if not status.get("busy") and status["state"] in ("running", "error"):
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"lab-cluster: cluster for {user} not created within {labd.timeout:g}s")
        time.sleep(0.2)
    if status["state"] == "error":
        raise SystemExit(f"lab-cluster: creating the cluster for {user} failed: {status.get('error')}")
    code, body = labd.call("POST", f"/v1/users/{user}/stop")
    if code != 200:
        raise SystemExit(f"lab-cluster: labd stop {user}: HTTP {code}: {body}")
    return {"user": user, "action": "created", "state": body["state"], "cluster": body.get("cluster")}


def delete(labd: Labd, user: str) -> dict[str, Any]:
    code, body = labd.call("DELETE", f"/v1/users/{user}")
    if code != 200:
        raise SystemExit(f"lab-cluster: labd delete {user}: HTTP {code}: {body}")
    return {"user": user, "action": "deleted", "cluster": body.get("cluster")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lab-cluster")
    parser.add_argument("--config", default="/etc/labd/labd.json")
    parser.add_argument("action", choices=["create", "delete"])
    parser.add_argument("user")
    args = parser.parse_args(argv)
    labd = Labd(args.config)
    result = create(labd, args.user) if args.action == "create" else delete(labd, args.user)
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
