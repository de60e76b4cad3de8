#!/usr/bin/env python3
"""k3d DOUBLE: a stand-in for the k3d CLI in labd's fast tests and for fault injection.

The real k3d runs in this tier too (tests/labs/test_k3d_real.py, on a
throwaway dockerd); this double stays for what a real engine cannot produce
on demand (K3D_DOUBLE_FAIL, K3D_DOUBLE_DELAY) and for the many labd tests
that need no containers. What it claims is replayed against the real k3d in
test_k3d_real.py::test_the_double_claims_what_the_real_k3d_does.

It is not k3d. It records every call (argv, environment, exit status) as one
JSON line in $K3D_DOUBLE_DIR/calls.jsonl, checks each call against k3d v5's
documented CLI (the subcommands and flags of `k3d cluster create/start/stop/
delete/list` and `k3d kubeconfig get`, and the `k3d.io/v1alpha5` Simple config
schema transcribed below), and keeps fake cluster state in
$K3D_DOUBLE_DIR/clusters.json so that list/start/stop/delete behave. Invalid
usage exits non-zero with k3d/cobra-like messages.

Knobs for tests: K3D_DOUBLE_DELAY (seconds create/start/stop take),
K3D_DOUBLE_FAIL (comma list of subcommands that fail, e.g. "create").
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import sys
import time
from typing import Any

import yaml

GLOBAL_FLAGS = {"--verbose", "--trace", "--timestamps"}
# flag -> takes a value? (from the k3d v5 command reference)
CREATE_FLAGS: dict[str, bool] = {
    "-a": True,
    "--agents": True,
    "--agents-memory": True,
    "--api-port": True,
    "-c": True,
    "--config": True,
    "-e": True,
    "--env": True,
    "--gpus": True,
    "-h": False,
    "--help": False,
    "--host-alias": True,
    "--host-pid-mode": False,
    "-i": True,
    "--image": True,
    "--k3s-arg": True,
    "--k3s-node-label": True,
    "--kubeconfig-switch-context": False,
    "--kubeconfig-update-default": False,
    "--lb-config-override": True,
    "--network": True,
    "--no-image-volume": False,
    "--no-lb": False,
    "--no-rollback": False,
    "-p": True,
    "--port": True,
    "--registry-config": True,
    "--registry-create": True,
    "--registry-use": True,
    "--runtime-label": True,
    "--runtime-ulimit": True,
    "-s": True,
    "--servers": True,
    "--servers-memory": True,
    "--subnet": True,
    "--timeout": True,
    "--token": True,
    "-v": True,
    "--volume": True,
    "--wait": False,
}
START_FLAGS = {"-a": False, "--all": False, "-h": False, "--help": False, "--timeout": True, "--wait": False}
STOP_FLAGS = {"-a": False, "--all": False, "-h": False, "--help": False}
DELETE_FLAGS = {"-a": False, "--all": False, "-c": True, "--config": True, "-h": False, "--help": False}
LIST_FLAGS = {"-h": False, "--help": False, "--no-headers": False, "-o": True, "--output": True, "--token": False}
KUBECONFIG_GET_FLAGS = {"-a": False, "--all": False, "-h": False, "--help": False}

NODE_FILTER_RE = re.compile(r"^(all|loadbalancer|(server|agent|servers|agents)(:(\*|\d+([,-]\d+)*))?)$")
PORT_RE = re.compile(r"^(?:(?:\d{1,3}(?:\.\d{1,3}){3}|[a-z0-9.-]+):)?(?:(\d{1,5}):)?(\d{1,5})(?:/(tcp|udp))?$")


def split_port(spec: str) -> tuple[str | None, str, str]:
    """(host port or None, container port, protocol) of a valid `[ip:][hostPort:]containerPort[/proto]`.

    Not PORT_RE's groups: its optional host-name alternative also matches a bare
    host port ("8080:80"), which left the host port out (the real k3d's port
    bindings showed it: test_k3d_real.py).
    """
    ports, _, proto = spec.partition("/")
    parts = ports.split(":")
    return (parts[-2] if len(parts) >= 2 else None), parts[-1], proto or "tcp"


def host_ip(spec: str) -> str | None:
    """The address of a valid `ip:hostPort:containerPort[/proto]`, or None when the spec names none."""
    parts = spec.partition("/")[0].split(":")
    return parts[0] if len(parts) == 3 else None


HOSTNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")

# The k3d.io/v1alpha5 "Simple" schema, transcribed: key -> expected type or nested spec.
NODE_FILTERS: Any = ["str"]
SCHEMA: dict[str, Any] = {
    "apiVersion": "str",
    "kind": "str",
    "metadata": {"name": "str"},
    "servers": "num",
    "agents": "num",
    "kubeAPI": {"host": "str", "hostIP": "str", "hostPort": "str"},
    "image": "str",
    "network": "str",
    "subnet": "str",
    "token": "str",
    "volumes": [{"volume": "str", "nodeFilters": NODE_FILTERS}],
    "manifests": [{"name": "str", "manifest": "str"}],
    "ports": [{"port": "str", "nodeFilters": NODE_FILTERS}],
    "options": {
        "k3d": {
            "wait": "bool",
            "timeout": "any",
            "disableLoadbalancer": "bool",
            "disableImageVolume": "bool",
            "disableRollback": "bool",
            "loadbalancer": {"configOverrides": ["any"]},
        },
        "k3s": {
            "extraArgs": [{"arg": "str", "nodeFilters": NODE_FILTERS}],
            "nodeLabels": [{"label": "str", "nodeFilters": NODE_FILTERS}],
        },
        "kubeconfig": {"updateDefaultKubeconfig": "bool", "switchCurrentContext": "bool"},
        "runtime": {
            "gpuRequest": "str",
            "serversMemory": "str",
            "agentsMemory": "str",
            "hostPidMode": "bool",
            "labels": [{"label": "str", "nodeFilters": NODE_FILTERS}],
            "ulimits": [{"name": "str", "soft": "num", "hard": "num"}],
        },
    },
    "env": [{"envVar": "str", "nodeFilters": NODE_FILTERS}],
    "registries": {
        "create": {
            "name": "str",
            "host": "str",
            "hostPort": "str",
            "image": "str",
            "proxy": {"remoteURL": "str", "username": "str", "password": "str"},
            "volumes": ["str"],
        },
        "use": ["str"],
        "config": "str",
    },
    "hostAliases": [{"ip": "str", "hostnames": ["str"]}],
}


class Usage(Exception):
    """Invalid usage: cobra prints 'Error: ...' and exits 1."""


class Fatal(Exception):
    """k3d's own failure: logged as FATA[0000] and exit 1."""


def check_schema(value: Any, spec: Any, where: str) -> None:
    if spec == "any":
        return
    if spec == "str":
        if not isinstance(value, str):
            raise Fatal(f"Schema Validation failed for config file: {where}: Invalid type. Expected: string")
        return
    if spec == "num":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Fatal(f"Schema Validation failed for config file: {where}: Invalid type. Expected: number")
        return
    if spec == "bool":
        if not isinstance(value, bool):
            raise Fatal(f"Schema Validation failed for config file: {where}: Invalid type. Expected: boolean")
        return
    if isinstance(spec, list):
        if not isinstance(value, list):
            raise Fatal(f"Schema Validation failed for config file: {where}: Invalid type. Expected: array")
        for i, item in enumerate(value):
            check_schema(item, spec[0], f"{where}.{i}")
        return
    if not isinstance(value, dict):
        raise Fatal(f"Schema Validation failed for config file: {where}: Invalid type. Expected: object")
    for key, item in value.items():
        if key not in spec:
            raise Fatal(f"Schema Validation failed for config file: {where}: Additional property {key} is not allowed")
        check_schema(item, spec[key], f"{where}.{key}")


def validate_config(path: str) -> dict[str, Any]:
    if not path.endswith((".yaml", ".yml")):
        raise Fatal(f"config file {path} must be .yaml or .yml")
    try:
        with open(path, encoding="utf-8") as handle:
            config = yaml.safe_load(handle)
    except OSError as err:
        raise Fatal(f"Failed to read config file {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise Fatal(f"Failed to parse config file {path}: {err}") from None
    if not isinstance(config, dict):
        raise Fatal(f"Failed to parse config file {path}: not a mapping")
    for required in ("apiVersion", "kind"):
        if required not in config:
            raise Fatal(f"Schema Validation failed for config file {path}: (root): {required} is required")
    if config["apiVersion"] != "k3d.io/v1alpha5":
        raise Fatal(f"Schema Validation failed for config file {path}: apiVersion: must be one of: k3d.io/v1alpha5")
    if config["kind"] != "Simple":
        raise Fatal(f"Schema Validation failed for config file {path}: kind: must be one of: Simple")
    check_schema(config, SCHEMA, "(root)")
    if "servers" in config and config["servers"] < 1:
        raise Fatal("Schema Validation failed for config file: servers: Must be greater than or equal to 1")
    if "agents" in config and config["agents"] < 0:
        raise Fatal("Schema Validation failed for config file: agents: Must be greater than or equal to 0")
    for section in ("ports", "volumes", "env"):
        for entry in config.get(section, []):
            for node_filter in entry.get("nodeFilters", []):
                if not NODE_FILTER_RE.match(node_filter):
                    raise Fatal(f"Failed to parse node filters: invalid format or empty subset in '{node_filter}'")
    for entry in config.get("ports", []):
        if not PORT_RE.match(entry.get("port", "")):
            raise Fatal(f"Failed to parse port mapping '{entry.get('port')}'")
    host_port = config.get("kubeAPI", {}).get("hostPort")
    if host_port is not None and (not host_port.isdigit() or not 0 < int(host_port) < 65536):
        raise Fatal(f"Failed to parse API port '{host_port}'")
    return config


def parse_flags(args: list[str], spec: dict[str, bool], command: str) -> tuple[dict[str, list[str]], list[str]]:
    flags: dict[str, list[str]] = {}
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("-") and arg != "-":
            name, eq, inline = arg.partition("=")
            if name in GLOBAL_FLAGS:
                i += 1
                continue
            if name not in spec:
                raise Usage(
                    f"unknown flag: {name}"
                    if name.startswith("--")
                    else f"unknown shorthand flag: '{name[1:]}' in {arg}"
                )
            if spec[name]:
                if eq:
                    value = inline
                elif i + 1 < len(args):
                    i += 1
                    value = args[i]
                else:
                    raise Usage(f"flag needs an argument: {name}")
            else:
                value = inline or "true"
            flags.setdefault(name, []).append(value)
        else:
            positional.append(arg)
        i += 1
    if "-h" in flags or "--help" in flags:
        raise Usage(f"help requested for {command} (the double prints no help)")
    return flags, positional


def one(flags: dict[str, list[str]], *names: str) -> str | None:
    for name in names:
        if name in flags:
            return flags[name][-1]
    return None


class State:
    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, "clusters.json")
        self.lock = open(os.path.join(directory, "clusters.lock"), "a")  # noqa: SIM115 (held for the call)
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        try:
            with open(self.path, encoding="utf-8") as handle:
                self.clusters: dict[str, Any] = json.load(handle)
        except FileNotFoundError:
            self.clusters = {}

    def save(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(self.clusters, handle, indent=2, sort_keys=True)
        os.replace(tmp, self.path)


def maybe_fail(sub: str) -> None:
    if sub in os.environ.get("K3D_DOUBLE_FAIL", "").split(","):
        raise Fatal(f"Failed to {sub} cluster: K3D_DOUBLE_FAIL asked the double to fail")


def delay() -> None:
    time.sleep(float(os.environ.get("K3D_DOUBLE_DELAY", "0") or 0))


def select(state: State, flags: dict[str, list[str]], names: list[str], verb: str) -> list[str]:
    if "--all" in flags or "-a" in flags:
        if names:
            raise Usage(f"cannot use --all together with cluster names for {verb}")
        return sorted(state.clusters)
    if not names:
        raise Fatal(f"No cluster(s) specified to {verb}")
    for name in names:
        if name not in state.clusters:
            raise Fatal(f"failed to get cluster {name}: No nodes found for given cluster")
    return names


def cluster_create(state: State, args: list[str]) -> str:
    flags, positional = parse_flags(args, CREATE_FLAGS, "cluster create")
    if len(positional) > 1:
        raise Usage(f"accepts at most 1 arg(s), received {len(positional)}")
    config: dict[str, Any] = {}
    config_path = one(flags, "-c", "--config")
    if config_path:
        config = validate_config(config_path)
    name = positional[0] if positional else config.get("metadata", {}).get("name", "k3s-default")
    if len(name) > 32 or not HOSTNAME_RE.match(name):
        raise Fatal(
            f"Failed to create cluster: invalid cluster name '{name}': must be a valid hostname "
            "of at most 32 characters"
        )
    if name in state.clusters:
        raise Fatal(f"Failed to create cluster '{name}' because a cluster with that name already exists")
    servers = int(one(flags, "-s", "--servers") or config.get("servers", 1))
    agents = int(one(flags, "-a", "--agents") or config.get("agents", 0))
    host_ports = [host for e in config.get("ports", []) if (host := split_port(e["port"])[0])]
    api_port = config.get("kubeAPI", {}).get("hostPort") or str(6443 + len(state.clusters) + 1)
    host_ports.append(api_port)
    # A real Docker daemon refuses to bind a host port twice.
    for other, info in state.clusters.items():
        clash = set(host_ports) & set(info["hostPorts"])
        if clash:
            raise Fatal(
                f"Failed to create cluster '{name}': port {sorted(clash)[0]} is already allocated (cluster {other})"
            )
    maybe_fail("create")
    delay()
    # As k3d publishes them on the loadbalancer: the API port keyed without a
    # protocol, on kubeAPI.hostIP (k3d's default "0.0.0.0"); every other port
    # on the address its spec names, else HostIp "" (all addresses): the real
    # k3d's HostIp values (test_k3d_real.py). The clash check above is by port alone: stricter than
    # Docker when two specific addresses share a port, which labd never does.
    api_ip = config.get("kubeAPI", {}).get("hostIP") or "0.0.0.0"
    mappings = {"6443": [{"HostIp": api_ip, "HostPort": api_port}]}
    for entry in config.get("ports", []):
        host, container, proto = split_port(entry["port"])
        if host and "loadbalancer" in entry.get("nodeFilters", ["loadbalancer"]):
            binding = {"HostIp": host_ip(entry["port"]) or "", "HostPort": host}
            mappings.setdefault(f"{container}/{proto}", []).append(binding)
    state.clusters[name] = {
        "servers": servers,
        "agents": agents,
        "running": True,
        "apiPort": api_port,
        "hostPorts": host_ports,
        "portMappings": mappings,
        "image": config.get("image", "docker.io/rancher/k3s:latest"),
        "config": config,
    }
    state.save()
    return f"INFO[0000] Cluster '{name}' created successfully!\n"


def cluster_startstop(state: State, args: list[str], verb: str) -> str:
    flags, names = parse_flags(args, START_FLAGS if verb == "start" else STOP_FLAGS, f"cluster {verb}")
    targets = select(state, flags, names, verb)
    maybe_fail(verb)
    delay()
    for name in targets:
        state.clusters[name]["running"] = verb == "start"
    state.save()
    return "".join(f"INFO[0000] {'Started' if verb == 'start' else 'Stopped'} cluster '{n}'\n" for n in targets)


def cluster_delete(state: State, args: list[str]) -> str:
    flags, names = parse_flags(args, DELETE_FLAGS, "cluster delete")
    if "--all" in flags or "-a" in flags:
        names = sorted(state.clusters)
    out = ""
    for name in names:
        if name not in state.clusters:
            out += f"INFO[0000] No nodes found for given cluster '{name}'\n"
            continue
        maybe_fail("delete")
        del state.clusters[name]
        out += f"INFO[0000] Successfully deleted cluster {name}!\n"
    state.save()
    return out


def cluster_list(state: State, args: list[str]) -> str:
    flags, names = parse_flags(args, LIST_FLAGS, "cluster list")
    output = one(flags, "-o", "--output")
    if output not in (None, "json", "yaml"):
        raise Fatal(f"Unknown output format '{output}'; one of: json|yaml")
    for name in names:
        if name not in state.clusters:
            raise Fatal(f"failed to get cluster {name}")
    chosen = names or sorted(state.clusters)
    items = []
    for name in chosen:
        info = state.clusters[name]
        running = info["running"]
        nodes = [
            {"name": f"k3d-{name}-server-{i}", "role": "server", "State": {"Running": running}}
            for i in range(info["servers"])
        ]
        nodes += [
            {"name": f"k3d-{name}-agent-{i}", "role": "agent", "State": {"Running": running}}
            for i in range(info["agents"])
        ]
        # k3d lists its loadbalancer among the nodes (checked against the real k3d: test_k3d_real.py)
        nodes.append(
            {
                "name": f"k3d-{name}-serverlb",
                "role": "loadbalancer",
                "State": {"Running": running},
                "portMappings": info.get("portMappings", {}),
            }
        )
        items.append(
            {
                "name": name,
                "nodes": nodes,
                "serversCount": info["servers"],
                "serversRunning": info["servers"] if running else 0,
                "agentsCount": info["agents"],
                "agentsRunning": info["agents"] if running else 0,
                "hasLoadbalancer": True,
            }
        )
    if output == "json":
        return json.dumps(items) + "\n"
    if output == "yaml":
        return yaml.safe_dump(items)
    lines = [] if "--no-headers" in flags else ["NAME   SERVERS   AGENTS   LOADBALANCER"]
    lines += [
        f"{i['name']}   {i['serversRunning']}/{i['serversCount']}   {i['agentsRunning']}/{i['agentsCount']}   true"
        for i in items
    ]
    return "\n".join(lines) + "\n"


def kubeconfig_get(state: State, args: list[str]) -> str:
    flags, names = parse_flags(args, KUBECONFIG_GET_FLAGS, "kubeconfig get")
    targets = select(state, flags, names, "get kubeconfig for")
    for name in targets:
        if not state.clusters[name]["running"]:
            raise Fatal(f"Failed to get kubeconfig for cluster '{name}': cluster is not running")
    docs = []
    for name in targets:
        port = state.clusters[name]["apiPort"]
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": f"k3d-{name}",
                "clusters": [
                    {
                        "name": f"k3d-{name}",
                        "cluster": {"server": f"https://0.0.0.0:{port}", "certificate-authority-data": "RE9VQkxF"},
                    }
                ],
                "contexts": [
                    {"name": f"k3d-{name}", "context": {"cluster": f"k3d-{name}", "user": f"admin@k3d-{name}"}}
                ],
                "users": [
                    {
                        "name": f"admin@k3d-{name}",
                        "user": {"client-certificate-data": "RE9VQkxF", "client-key-data": "RE9VQkxF"},
                    }
                ],
            }
        )
    return "".join(yaml.safe_dump(d, sort_keys=False) for d in docs)


def run(argv: list[str], state_dir: str) -> tuple[int, str, str]:
    args = [a for a in argv if a not in GLOBAL_FLAGS]
    if not args:
        return 1, "", "Error: the double needs a subcommand (k3d prints help here)\n"
    if args[0] == "version":
        return 0, "k3d version v5.8.3 (k3d DOUBLE)\nk3s version v1.31.5-k3s1 (default)\n", ""
    state = State(state_dir)
    try:
        group, rest = args[0], args[1:]
        if group == "cluster" and rest:
            sub, tail = rest[0], rest[1:]
            handlers = {
                "create": lambda: cluster_create(state, tail),
                "start": lambda: cluster_startstop(state, tail, "start"),
                "stop": lambda: cluster_startstop(state, tail, "stop"),
                "delete": lambda: cluster_delete(state, tail),
                "list": lambda: cluster_list(state, tail),
                "ls": lambda: cluster_list(state, tail),
                "get": lambda: cluster_list(state, tail),
            }
            if sub not in handlers:
                raise Usage(f'unknown command "{sub}" for "k3d cluster"')
            return 0, handlers[sub](), ""
        if group == "kubeconfig" and rest and rest[0] == "get":
            return 0, kubeconfig_get(state, rest[1:]), ""
        raise Usage(f'unknown command "{" ".join(args[:2])}" for "k3d"')
    except Usage as err:
        return 1, "", f"Error: {err}\n"
    except Fatal as err:
        return 1, "", f"FATA[0000] {err}\n"


def main() -> int:
    state_dir = os.environ.get("K3D_DOUBLE_DIR")
    if not state_dir:
        sys.stderr.write("k3d DOUBLE: K3D_DOUBLE_DIR is not set (this is the test double, not k3d)\n")
        return 3
    os.makedirs(state_dir, exist_ok=True)
    started = time.time()
    rc, out, err = run(sys.argv[1:], state_dir)
    with open(os.path.join(state_dir, "calls.jsonl"), "a", encoding="utf-8") as log:
        log.write(
            json.dumps(
                {
                    "argv": sys.argv[1:],
                    "env": dict(os.environ),
                    "rc": rc,
                    "started": started,
                    "ended": time.time(),
                    "stderr": err,
                }
            )
            + "\n"
        )
    sys.stdout.write(out)
    sys.stderr.write(err)
    return rc


if __name__ == "__main__":
    sys.exit(main())
