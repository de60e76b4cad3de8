#!/usr/bin/env python3
"""A real Kubernetes node joined to tools/localcluster.py's control plane.

kubelet and kube-proxy (built by ``tools/toolchain.sh cluster`` from the same
k8s.io/kubernetes tree as the API server) with Debian's containerd, runc and
CNI plugins: pods really run, probes really connect, Services really route.

Layout (what ../shared/notes/real-node.md found to work here)::

    host netns                                  router netns (this node's own)
      kubelet, containerd, kube-proxy             cni0 bridge 10.245.0.1/24 <- pod veths
      (API server on 127.0.0.1)                   kube-proxy's iptables rules (nat, filter)
      routes: pods 10.245.0.0/24,  --veth /30-->  isolation: pods reach neither the uplink
              Services 10.96.0.0/16,              nor the router itself
              LoadBalancers 10.247.0.0/24

- The CNI ``bridge`` plugin is wrapped so it runs inside the router netns;
  kube-proxy (and kubelet) get ``iptables*`` wrappers on their PATH that run
  inside it too, so no rule is ever written to the host's tables.
- Every process the node starts, containers included, lives in the cgroup
  subtree ``/classroom-node-<id>``; stop() kills what is left there.
- stop() leaves nothing behind: processes, mounts, network namespaces, the
  veth pair and routes, nfacct objects kube-proxy made in the host netns,
  containerd's files under /run/containerd, /var/log/containers links, CNI
  cache entries, and the kernel settings kubelet changes (it sets
  vm.overcommit_memory, kernel.panic, kernel.panic_on_oops) are restored.

One real node per machine at a time (its addresses are fixed; a lock file
says who holds it).  Use it as a context manager::

    with LocalCluster(d, fake_nodes=(), lb_pool=NODE_LB_POOL) as cluster, RealNode(cluster, d2) as node:
        node.import_image(tar)

or ``python tools/node.py demo --dir DIR`` to start a cluster and a node and
wait for Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import io
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import types
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import localcluster
from localcluster import ApiError, LocalCluster, Pki, free_port, pid_alive, write_kubeconfig

NODE_NAME = "localhost"  # the API server reaches the kubelet by this name (loopback node IPs are refused)
POD_CIDR = ipaddress.IPv4Network("10.245.0.0/24")
UPLINK = ipaddress.IPv4Network("10.246.0.0/30")  # .1 host side, .2 router side
NODE_LB_POOL = ipaddress.IPv4Network("10.247.0.0/24")  # routed to the node, like MetalLB's L2 mode
SERVICE_CIDR = ipaddress.IPv4Network(localcluster.SERVICE_CIDR)
PAUSE_IMAGE = "classroom.local/pause:1"
BUSYBOX = Path("/bin/busybox")  # busybox-static: the pause image and test images
CNI_PLUGINS = Path("/usr/lib/cni")
LOCK_FILE = Path("/run/classroom-node.lock")
# kubelet's setupKernelTunables rewrites these; stop() puts them back
KERNEL_TUNABLES = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
CGROUP_ROOT = Path("/sys/fs/cgroup")
# directories containerd's shim and the kubelet write to whatever their configured roots
HOST_DIRS = {
    "/run/containerd": "run_containerd",
    "/var/log/containers": "var_log_containers",
    "/var/lib/cni": "var_lib_cni",
}
# nfacct counters kube-proxy creates (in its own, the host's, netns) and must find in the rules' netns
KUBE_PROXY_NFACCT = ("ct_state_invalid_dropped_pkts", "localhost_nps_accepted_pkts")
NETFILTER_TOOLS = (
    "iptables",
    "iptables-save",
    "iptables-restore",
    "ip6tables",
    "ip6tables-save",
    "ip6tables-restore",
    "iptables-nft",
    "iptables-nft-save",
    "iptables-nft-restore",
    "ip6tables-nft",
    "ip6tables-nft-save",
    "ip6tables-nft-restore",
    "iptables-legacy",
    "iptables-legacy-save",
    "iptables-legacy-restore",
    "ip6tables-legacy",
    "ip6tables-legacy-save",
    "ip6tables-legacy-restore",
    "conntrack",
    "nft",
)


class NodeError(RuntimeError):
    """Something the user can act on; the message names the step and its log."""


def log(msg: str) -> None:
    print(f"[node] {msg}", file=sys.stderr, flush=True)


def run(*argv: str, check: bool = True, netns: str | None = None, timeout: float = 60) -> str:
    cmd = [*(["ip", "netns", "exec", netns] if netns else []), *argv]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise NodeError(f"{' '.join(cmd)} failed (exit {result.returncode}): {result.stderr.strip()[-800:]}")
    return result.stdout


def find_node_binaries() -> dict[str, Path]:
    """kubelet/kube-proxy from the toolchain; containerd, runc, CNI plugins, busybox from Debian."""
    bin_dir = localcluster.toolchain_bin_dir()
    found: dict[str, Path] = {}
    missing: list[str] = []
    for name in ("kubelet", "kube-proxy"):
        path = bin_dir / name if bin_dir else None
        if path and path.is_file():
            found[name] = path
        else:
            missing.append(f"{name} (tools/toolchain.sh cluster)")
    for name in ("containerd", "containerd-shim-runc-v2", "ctr", "runc", "nsenter", "ip", "iptables", "nfacct"):
        which = shutil.which(name, path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        if which:
            found[name] = Path(which)
        else:
            missing.append(f"{name} (tools/apt-packages.txt)")
    for plugin in ("bridge", "host-local", "loopback"):
        if (CNI_PLUGINS / plugin).is_file():
            found[f"cni-{plugin}"] = CNI_PLUGINS / plugin
        else:
            missing.append(f"{CNI_PLUGINS / plugin} (containernetworking-plugins)")
    if BUSYBOX.is_file():
        found["busybox"] = BUSYBOX
    else:
        missing.append(f"{BUSYBOX} (busybox-static)")
    if missing:
        raise NodeError(f"missing for a real node: {', '.join(missing)}")
    return found


# ------------------------------------------------------------------ images ---
def busybox_image(out: Path, ref: str, cmd: list[str], files: dict[str, bytes] | None = None) -> Path:
    """A one-layer docker-archive image of busybox-static (no registry needed).

    ``cmd`` runs busybox applets, e.g. ``["/bin/busybox", "httpd", "-f", ...]``.
    """
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        for directory in ("bin", "tmp", "etc"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        data = BUSYBOX.read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for applet in ("sh", "sleep", "cat", "echo", "nc", "grep", "mkdir"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        for name, content in sorted((files or {}).items()):
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size, info.mode = len(content), 0o644
            tar.addfile(info, io.BytesIO(content))
    layer_bytes = layer.getvalue()
    diff_id = hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": cmd, "Env": ["PATH=/bin"], "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        }
    ).encode()
    config_name = f"{hashlib.sha256(config).hexdigest()}.json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [ref], "Layers": [f"{diff_id}/layer.tar"]}]).encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w") as tar:
        for name, content in (
            (f"{diff_id}/layer.tar", layer_bytes),
            (config_name, config),
            ("manifest.json", manifest),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), 0o644
            tar.addfile(info, io.BytesIO(content))
    return out


# ------------------------------------------------------------ host state ---
def host_state() -> dict[str, Any]:
    """What a node could leave behind on the host, for before/after comparisons."""

    def listing(path: str) -> list[str]:
        p = Path(path)
        return sorted(e.name for e in p.iterdir()) if p.is_dir() else []

    def cgroups() -> list[str]:
        return sorted(
            str(p.relative_to(CGROUP_ROOT))
            for pattern in ("*/classroom-node-*", "*/k8s.io")
            for p in CGROUP_ROOT.glob(pattern)
        )

    return {
        "iptables": _rules("iptables-save"),
        "ip6tables": _rules("ip6tables-save"),
        "nfacct": sorted(_nfacct_names()),
        "netns": listing("/run/netns"),
        "links": sorted(link["ifname"] for link in json.loads(run("ip", "-j", "link", "show"))),
        "routes": sorted(json.dumps(r, sort_keys=True) for r in json.loads(run("ip", "-j", "route", "show"))),
        "mounts": sorted(line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()),
        "exists": {d: Path(d).is_dir() for d in HOST_DIRS},
        "run_containerd": listing("/run/containerd"),
        "var_log_containers": listing("/var/log/containers"),
        "var_lib_cni": listing("/var/lib/cni"),
        "cgroups": cgroups(),
        "kernel": {t: Path(f"/proc/sys/{t}").read_text().strip() for t in KERNEL_TUNABLES},
    }


def leftovers(before: dict[str, Any], node_dir: Path) -> dict[str, Any]:
    """What a node left on the host: every difference from `before` that a node can cause.

    Unrelated churn (other test runs' own mounts and namespaces) is not counted;
    /run/netns itself (iproute2 leaves it as a shared bind mount on first use,
    like every `ip netns add` here) is not either.
    """
    after = host_state()
    node_dir = Path(node_dir).resolve()
    found: dict[str, Any] = {}
    for key in (
        "iptables",
        "ip6tables",
        "nfacct",
        "run_containerd",
        "var_log_containers",
        "var_lib_cni",
        "exists",
        "kernel",
        "cgroups",
    ):
        if before[key] != after[key]:
            found[key] = {"before": before[key], "after": after[key]}
    new = {key: sorted(set(after[key]) - set(before[key])) for key in ("netns", "links", "routes", "mounts")}
    nets = [POD_CIDR, UPLINK, SERVICE_CIDR, NODE_LB_POOL]
    checks = {
        "netns": lambda n: n.startswith(("cni-", "classroom-node-")),
        "links": lambda n: n.startswith(("cnh", "cnr", "veth", "cni")),
        "routes": lambda r: (
            json.loads(r)["dst"] != "default"
            and any(ipaddress.ip_network(json.loads(r)["dst"], strict=False).overlaps(n) for n in nets)
        ),
        "mounts": lambda m: m.startswith((str(node_dir), "/run/netns/", "/run/containerd")),
    }
    for key, mine in checks.items():
        if hits := [x for x in new[key] if mine(x)]:
            found[key] = hits
    procs = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if str(node_dir) in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    procs.append(int(entry.name))
    if procs:
        found["processes"] = procs
    return found


def _rules(tool: str) -> list[str]:
    """The host's rules without counters or comments that change by themselves."""
    out = run(tool, check=False)
    return [line for line in out.splitlines() if line and not line.startswith("#") and not line.startswith(":")] + [
        line.split(" [")[0] for line in out.splitlines() if line.startswith(":")
    ]


def _nfacct_names(netns: str | None = None) -> set[str]:
    out = run("nfacct", "list", check=False, netns=netns)
    names = set()
    for line in out.splitlines():
        # { pkts = 00000000000000000000, bytes = 00000000000000000000 } = NAME;
        if "} = " in line:
            names.add(line.rsplit("} = ", 1)[1].rstrip(";").strip())
    return names


# -------------------------------------------------------------- the node ---
@dataclass
class RealNode:
    """kubelet + containerd + runc + CNI + kube-proxy in `dir`, joined to `cluster`."""

    cluster: LocalCluster
    dir: Path
    name: str = NODE_NAME
    pod_cidr: ipaddress.IPv4Network = POD_CIDR
    uplink: ipaddress.IPv4Network = UPLINK
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _before: dict[str, Any] = field(default_factory=dict)
    _lock: Any = None
    _ports: dict[str, int] = field(default_factory=dict)
    _orphans: dict[str, int] = field(default_factory=dict)  # pids of a node started by another process

    def __post_init__(self) -> None:
        self.dir = Path(self.dir).resolve()
        self.id = hashlib.sha256(str(self.dir).encode()).hexdigest()[:6]
        self.netns = f"classroom-node-{self.id}"
        self.veth_host, self.veth_router = f"cnh{self.id}", f"cnr{self.id}"
        self.cgroup = f"classroom-node-{self.id}"
        self.host_ip, self.router_ip = (str(a) for a in list(self.uplink.hosts())[:2])
        self.gateway = str(next(self.pod_cidr.hosts()))
        self.logs = self.dir / "logs"
        self.socket = self.dir / "containerd" / "containerd.sock"

    # ---- lifecycle --------------------------------------------------------
    def __enter__(self) -> RealNode:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 120) -> None:
        if os.geteuid() != 0:
            raise NodeError("a real node needs root (network namespaces, mounts, cgroups)")
        bins = find_node_binaries()
        t0 = time.monotonic()
        self._take_lock()
        self._before = host_state()
        self._save_state()
        self._check_addresses_free()
        for sub in (
            "logs",
            "bin",
            "cni/bin",
            "cni/conf",
            "cni/ipam",
            "containerd",
            "kubelet",
            "pod-logs",
            "volume-plugins",
            "images",
            "runc",
        ):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self._network()
        self._cgroups()
        self._wrappers(bins)
        self._credentials()
        self._start_containerd(bins, time.monotonic() + timeout)
        self.import_image(
            busybox_image(self.dir / "images" / "pause.tar", PAUSE_IMAGE, ["/bin/busybox", "sleep", "2147483647"])
        )
        self._start_kubelet(bins, time.monotonic() + timeout)
        self._start_kube_proxy(bins, time.monotonic() + timeout)
        self._start_watchdog()
        self.started_in = time.monotonic() - t0
        log(f"node {self.name} Ready in {self.started_in:.1f}s (pods {self.pod_cidr}, netns {self.netns})")

    @property
    def state_file(self) -> Path:
        return self.dir / "node.json"

    def _save_state(self) -> None:
        # what stop() needs, so that `node.py stop --dir` and the watchdog can clean up after a crash
        self.dir.mkdir(parents=True, exist_ok=True)
        state = {
            "before": self._before,
            "pids": {n: p.pid for n, p in self._procs.items()},
            "cluster": str(self.cluster.dir),
            "lb_pool": str(self.cluster.lb_pool),
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_file)

    def _start_watchdog(self) -> None:
        # if the owner dies without stop() (SIGKILL, a crash), the watchdog stops the node
        self._spawn(
            "watchdog",
            [sys.executable, str(Path(__file__).resolve()), "watch", f"--dir={self.dir}", f"--owner-pid={os.getpid()}"],
            join_cgroup=False,
        )

    @classmethod
    def from_state(cls, node_dir: Path) -> RealNode:
        """A handle on a node some other process started in `node_dir` (for stop)."""
        state = json.loads((Path(node_dir) / "node.json").read_text())
        cluster = LocalCluster(Path(state["cluster"]), lb_pool=ipaddress.IPv4Network(state["lb_pool"]))
        node = cls(cluster, Path(node_dir))
        node._before = state["before"]
        node._orphans = {n: pid for n, pid in state["pids"].items() if n != "watchdog"}
        return node

    def _take_lock(self) -> None:
        self._lock = LOCK_FILE.open("a+")
        deadline = time.monotonic() + 600
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self._lock.seek(0)
                    raise NodeError(f"another real node holds {LOCK_FILE} ({self._lock.read().strip()})") from None
                time.sleep(1)
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(f"pid {os.getpid()} dir {self.dir}\n")
        self._lock.flush()

    def _check_addresses_free(self) -> None:
        taken = [
            net
            for net in (self.pod_cidr, self.uplink, SERVICE_CIDR, *self._lb_pools())
            for route in json.loads(run("ip", "-j", "route", "show"))
            if route["dst"] != "default" and ipaddress.ip_network(route["dst"], strict=False).overlaps(net)
        ]
        if taken:
            raise NodeError(
                f"the host already routes {', '.join(map(str, taken))}; a real node needs them "
                "(is another node, or a leftover of one, running? `ip route` shows it)"
            )

    def _lb_pools(self) -> list[ipaddress.IPv4Network]:
        pool = self.cluster.lb_pool
        return [] if pool.subnet_of(ipaddress.IPv4Network("127.0.0.0/8")) else [pool]

    def _network(self) -> None:
        run("ip", "netns", "add", self.netns)
        run("ip", "link", "add", self.veth_host, "type", "veth", "peer", "name", self.veth_router)
        run("ip", "link", "set", self.veth_router, "netns", self.netns)
        prefix = self.uplink.prefixlen
        run("ip", "addr", "add", f"{self.host_ip}/{prefix}", "dev", self.veth_host)
        run("ip", "link", "set", self.veth_host, "up")
        ns = self.netns
        run("ip", "addr", "add", f"{self.router_ip}/{prefix}", "dev", self.veth_router, netns=ns)
        run("ip", "link", "set", self.veth_router, "up", netns=ns)
        run("ip", "link", "set", "lo", "up", netns=ns)
        run("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=ns)
        # bridged pod-to-pod traffic through a Service must see kube-proxy's DNAT
        run("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1", netns=ns)
        # the host reaches pods (kubelet probes, tests), Services and LoadBalancer
        # addresses through the router; without the pod route probes would leave
        # by the default route and lie
        for net in (self.pod_cidr, SERVICE_CIDR, *self._lb_pools()):
            run("ip", "route", "add", str(net), "via", self.router_ip, "dev", self.veth_host)
        # pods reach neither the uplink (the host and beyond) nor the router itself
        iptables = ("iptables", "-w")
        run(*iptables, "-N", "CLASSROOM-NODE-ISOLATION", netns=ns)
        run(
            *iptables,
            "-A",
            "CLASSROOM-NODE-ISOLATION",
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            "-j",
            "RETURN",
            netns=ns,
        )
        run(*iptables, "-A", "CLASSROOM-NODE-ISOLATION", "-i", "cni0", "-o", self.veth_router, "-j", "DROP", netns=ns)
        run(*iptables, "-I", "FORWARD", "1", "-j", "CLASSROOM-NODE-ISOLATION", netns=ns)
        run(*iptables, "-I", "INPUT", "1", "-i", "cni0", "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP", netns=ns)
        for counter in KUBE_PROXY_NFACCT:  # its rules reference these in the router netns
            run("nfacct", "add", counter, netns=ns)

    def _cgroup_dirs(self) -> list[Path]:
        """This node's directory in every cgroup hierarchy (v1 controllers and the hybrid v2 one)."""
        return [h / self.cgroup for h in sorted(CGROUP_ROOT.iterdir()) if (h / "cgroup.procs").exists()]

    def _daemon_cgroup_dirs(self) -> list[Path]:
        # the v1 controllers; the hybrid v2 tree is where the sandbox itself accounts its
        # processes, so the daemons stay there (runc adds containers to it, stop() removes them)
        return [d for d in self._cgroup_dirs() if d.parent.name != "unified"]

    def _cgroups(self) -> None:
        for parent in self._daemon_cgroup_dirs():
            daemons = parent / "daemons"
            daemons.mkdir(parents=True, exist_ok=True)
            for knob in ("cpuset.cpus", "cpuset.mems"):  # cpuset children start empty
                for d in (parent, daemons):
                    if (d / knob).exists() and not (d / knob).read_text().strip():
                        (d / knob).write_text((d.parent / knob).read_text())

    def _join_cgroup(self) -> None:
        # runs in the child before exec: everything it starts stays in the subtree
        for parent in self._daemon_cgroup_dirs():
            (parent / "daemons" / "cgroup.procs").write_text(str(os.getpid()))

    def _wrappers(self, bins: dict[str, Path]) -> None:
        enter = f"exec {bins['nsenter']} --net=/run/netns/{self.netns}"
        for tool in NETFILTER_TOOLS:
            real = shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin")
            if real:
                script = self.dir / "bin" / tool
                script.write_text(f'#!/bin/sh\n{enter} {real} "$@"\n')
                script.chmod(0o755)
        bridge = self.dir / "cni" / "bin" / "bridge"
        bridge.write_text(
            f'#!/bin/sh\n# the pod bridge lives in the node\'s router netns\n{enter} {bins["cni-bridge"]} "$@"\n'
        )
        bridge.chmod(0o755)
        for plugin in ("host-local", "loopback"):
            link = self.dir / "cni" / "bin" / plugin
            link.unlink(missing_ok=True)
            link.symlink_to(bins[f"cni-{plugin}"])
        conf = {
            "cniVersion": "1.0.0",
            "name": f"classroom-node-{self.id}",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    # without the default route a pod answers only its own subnet: the kubelet's
                    # probes (from the host's uplink address) would time out
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": str(self.pod_cidr), "gateway": self.gateway}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.dir / "cni" / "ipam"),
                    },
                }
            ],
        }
        (self.dir / "cni" / "conf" / "10-classroom.conflist").write_text(json.dumps(conf, indent=2))

    def _credentials(self) -> None:
        pki = Pki(self.cluster.dir / "pki")
        pki.issue_client(f"node-{self.name}", f"system:node:{self.name}", "system:nodes")
        pki.issue_client("kube-proxy", "system:kube-proxy")  # bound to system:node-proxier by default
        server = yaml.safe_load(self.cluster.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
        write_kubeconfig(self.dir / "kubelet.kubeconfig", server, pki, f"node-{self.name}")
        write_kubeconfig(self.dir / "kube-proxy.kubeconfig", server, pki, "kube-proxy")
        self.ca_crt = pki.ca_crt

    def _env(self) -> dict[str, str]:
        return {
            "PATH": f"{self.dir / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.dir),
            "LANG": "C.UTF-8",
        }

    def _spawn(self, name: str, argv: list[str], join_cgroup: bool = True) -> None:
        logfile = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        try:
            self._procs[name] = subprocess.Popen(
                argv,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.dir,
                env={**self._env(), "PYTHONPATH": str(Path(__file__).resolve().parent)}
                if not join_cgroup
                else self._env(),
                start_new_session=True,
                preexec_fn=self._join_cgroup if join_cgroup else None,
            )
        finally:
            logfile.close()
        self._save_state()

    def _wait(self, what: str, deadline: float, check: Any) -> None:
        last = ""
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    tail = (self.logs / f"{name}.log").read_text(errors="replace")[-2500:]
                    raise NodeError(
                        f"{name} exited with {proc.returncode} while waiting for {what}; "
                        f"{self.logs / (name + '.log')} ends with:\n{tail}"
                    )
            try:
                if check():
                    return
            except (OSError, ApiError, KeyError, ValueError, NodeError) as e:
                last = str(e)
            time.sleep(0.3)
        raise NodeError(f"timed out waiting for {what} ({last}); logs in {self.logs}")

    def _start_containerd(self, bins: dict[str, Path], deadline: float) -> None:
        d = self.dir / "containerd"
        cri = '[plugins."io.containerd.grpc.v1.cri"]'
        config = f"""version = 2
root = "{d / "root"}"
state = "{d / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d / "opt"}"
{cri}
  sandbox_image = "{PAUSE_IMAGE}"
  # the sandbox lacks CAP_SYS_RESOURCE: lowering oom_score_adj fails every container
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  {cri[:-1]}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    {cri[:-1]}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      {cri[:-1]}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{bins["runc"]}"
        Root = "{self.dir / "runc"}"
  {cri[:-1]}.cni]
    bin_dir = "{self.dir / "cni" / "bin"}"
    conf_dir = "{self.dir / "cni" / "conf"}"
    max_conf_num = 1
"""
        (d / "config.toml").write_text(config)
        self._spawn("containerd", [str(bins["containerd"]), "--config", str(d / "config.toml")])
        self._wait("containerd", deadline, lambda: self.ctr("version") and True)

    def ctr(self, *args: str, timeout: float = 300) -> str:
        return run("ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args, timeout=timeout)

    def import_image(self, tar: Path) -> None:
        """Load a docker-archive (or OCI) tar into the node's containerd, for the kubelet."""
        self.ctr("images", "import", str(tar))

    def _start_kubelet(self, bins: dict[str, Path], deadline: float) -> None:
        self._ports["kubelet"] = free_port()
        self._ports["kubelet-healthz"] = free_port()
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": "127.0.0.1",
            "port": self._ports["kubelet"],
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self._ports["kubelet-healthz"],
            "readOnlyPort": 0,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.ca_crt)},
            },
            "authorization": {"mode": "Webhook"},
            "cgroupDriver": "cgroupfs",
            # pods' cgroups (kubepods/<qos>/pod<uid>/<container>) under the node's own subtree
            "cgroupsPerQOS": True,
            "cgroupRoot": f"/{self.cgroup}",
            "enforceNodeAllocatable": [],
            "failSwapOn": False,
            "oomScoreAdj": 0,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "podLogsDir": str(self.dir / "pod-logs"),
            "volumePluginDir": str(self.dir / "volume-plugins"),
            "evictionHard": {
                "memory.available": "1%",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "registerNode": True,
            "resolvConf": "",
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "nodeStatusUpdateFrequency": "5s",
        }
        (self.dir / "kubelet.yaml").write_text(yaml.safe_dump(config))
        self._spawn(
            "kubelet",
            [
                str(bins["kubelet"]),
                f"--config={self.dir / 'kubelet.yaml'}",
                f"--kubeconfig={self.dir / 'kubelet.kubeconfig'}",
                f"--root-dir={self.dir / 'kubelet'}",
                f"--cert-dir={self.dir / 'kubelet' / 'pki'}",
                f"--hostname-override={self.name}",
                "--v=1",
            ],
        )
        api = self.cluster.api()
        self._wait(f"node {self.name} Ready", deadline, lambda: self._node_ready(api))

    def _node_ready(self, api: localcluster.KubeApi) -> bool:
        node = api.get(f"/api/v1/nodes/{self.name}")
        return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions") or [])

    def _start_kube_proxy(self, bins: dict[str, Path], deadline: float) -> None:
        self._ports["kube-proxy-healthz"] = free_port()
        self._ports["kube-proxy-metrics"] = free_port()
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.dir / "kube-proxy.kubeconfig")},
            "hostnameOverride": self.name,
            "mode": "iptables",
            "clusterCIDR": str(self.pod_cidr),
            "healthzBindAddress": f"127.0.0.1:{self._ports['kube-proxy-healthz']}",
            "metricsBindAddress": f"127.0.0.1:{self._ports['kube-proxy-metrics']}",
            "oomScoreAdj": 0,
            # 0: leave the host's conntrack table sizes and timeouts alone
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
            "iptables": {"localhostNodePorts": False, "syncPeriod": "10s", "minSyncPeriod": "0s"},
        }
        (self.dir / "kube-proxy.yaml").write_text(yaml.safe_dump(config))
        self._spawn("kube-proxy", [str(bins["kube-proxy"]), f"--config={self.dir / 'kube-proxy.yaml'}", "--v=1"])
        url = f"http://127.0.0.1:{self._ports['kube-proxy-healthz']}/healthz"

        def healthy() -> bool:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.status == 200 and "KUBE-SERVICES" in run("iptables-save", "-t", "nat", netns=self.netns)

        self._wait("kube-proxy's rules", deadline, healthy)

    # ---- stop ---------------------------------------------------------------
    def stop(self) -> None:
        """Stop everything the node started and remove what it left on the host. Idempotent."""
        if not self._before:
            return
        errors: list[str] = []

        def attempt(what: str, fn: Any, *args: Any) -> None:
            try:
                fn(*args)
            except (OSError, NodeError, subprocess.SubprocessError, ApiError) as e:
                errors.append(f"{what}: {e}")

        attempt("draining the node", self._drain)
        for name in ("watchdog", "kube-proxy", "kubelet"):
            attempt(f"stopping {name}", self._terminate, name)
        attempt("killing containers", self._kill_cgroup, False)
        attempt("stopping containerd", self._terminate, "containerd")
        attempt("killing what is left", self._kill_cgroup, True)
        attempt("unmounting", self._unmount)
        attempt("removing pod network namespaces", self._remove_pod_netns)
        attempt("removing the router netns", run, "ip", "netns", "del", self.netns)
        if Path(f"/sys/class/net/{self.veth_host}").exists():
            attempt("removing the uplink", run, "ip", "link", "del", self.veth_host)
        attempt("removing nfacct objects", self._remove_nfacct)
        attempt("removing cgroups", self._remove_cgroups)
        attempt("removing files", self._remove_host_files)
        attempt("restoring kernel settings", self._restore_kernel)
        attempt("deleting the Node object", self._delete_node)
        self._before = {}
        self.state_file.unlink(missing_ok=True)
        if self._lock:
            self._lock.close()
            self._lock = None
        if errors:
            raise NodeError("stopping the node: " + "; ".join(errors))
        log(f"node {self.name} stopped; nothing of it is left on the host")

    def _drain(self) -> None:
        # Deleted pods make the kubelet stop their sandboxes the proper way (CNI DEL, netns removed).
        if "kubelet" not in self._procs or self._procs["kubelet"].poll() is not None:
            return
        try:
            api = self.cluster.api()
            api.merge_patch(f"/api/v1/nodes/{self.name}", {"spec": {"unschedulable": True}})
            pods = api.get(f"/api/v1/pods?fieldSelector=spec.nodeName%3D{self.name}")["items"]
            for pod in pods:
                meta = pod["metadata"]
                api.request(
                    "DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", {"gracePeriodSeconds": 1}
                )
        except (OSError, ApiError, ValueError):
            return  # the API server is gone: the kill below does it without the kubelet
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            tasks = self.ctr("tasks", "list", "-q").split()
            if not tasks:
                return
            time.sleep(0.5)

    def _terminate(self, name: str, grace: float = 15) -> None:
        if name in self._orphans:
            pid = self._orphans.pop(name)
            try:
                owned = str(self.dir) in Path(f"/proc/{pid}/cmdline").read_text()
            except OSError:
                owned = False
            if owned and pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGTERM)
                end = time.monotonic() + grace
                while pid_alive(pid) and time.monotonic() < end:
                    time.sleep(0.2)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            return
        proc = self._procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            log(f"{name} ignored SIGTERM; killing it")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def _cgroup_pids(self) -> set[int]:
        pids: set[int] = set()
        for parent in self._cgroup_dirs():
            for procs in parent.rglob("cgroup.procs"):
                with contextlib.suppress(OSError):
                    pids |= {int(p) for p in procs.read_text().split()}
        return pids

    def _kill_cgroup(self, everything: bool) -> None:
        """SIGKILL every process in the node's cgroups (but containerd, unless `everything`)."""
        keep = (
            set()
            if everything
            else {p.pid for p in self._procs.values() if p.poll() is None}
            | {pid for name, pid in self._orphans.items() if name == "containerd"}
        )
        deadline = time.monotonic() + 20
        while (pids := self._cgroup_pids() - keep) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        left = [p for p in self._cgroup_pids() - keep if pid_alive(p)]
        if left:
            raise NodeError(f"processes {left} survived SIGKILL in {self.cgroup}")

    def _own_mounts(self) -> list[str]:
        new_netns = set(Path(p).name for p in Path("/run/netns").glob("cni-*")) - set(self._before["netns"])
        mine = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].encode().decode("unicode_escape")
            if (
                point.startswith(str(self.dir) + "/")
                or any(point == f"/run/netns/{n}" for n in new_netns)
                or (point.startswith("/run/containerd/") and point.split("/")[3] not in self._before["run_containerd"])
            ):
                mine.append(point)
        return sorted(set(mine), key=len, reverse=True)

    def _unmount(self) -> None:
        for _ in range(5):
            points = self._own_mounts()
            if not points:
                return
            for point in points:
                subprocess.run(["umount", "-l", point], capture_output=True)
        raise NodeError(f"still mounted: {self._own_mounts()}")

    def _remove_pod_netns(self) -> None:
        for path in Path("/run/netns").glob("cni-*"):
            if path.name not in self._before["netns"]:
                subprocess.run(["umount", "-l", str(path)], capture_output=True)
                path.unlink(missing_ok=True)

    def _remove_nfacct(self) -> None:
        for name in _nfacct_names() - set(self._before["nfacct"]):
            run("nfacct", "del", name)

    def _remove_cgroups(self) -> None:
        for parent in self._cgroup_dirs():
            if not parent.exists():
                continue
            for _ in range(10):
                for d in sorted((p for p in parent.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
                    with contextlib.suppress(OSError):
                        d.rmdir()
                with contextlib.suppress(OSError):
                    parent.rmdir()
                if not parent.exists():
                    break
                time.sleep(0.2)
            if parent.exists():
                raise NodeError(f"cgroup {parent} cannot be removed")

    def _remove_host_files(self) -> None:
        for directory, key in HOST_DIRS.items():
            path = Path(directory)
            if not path.exists():
                continue
            for entry in path.iterdir():
                if entry.name in self._before[key]:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            if not self._before["exists"][directory] and not any(path.iterdir()):
                path.rmdir()

    def _restore_kernel(self) -> None:
        for tunable, value in self._before["kernel"].items():
            path = Path(f"/proc/sys/{tunable}")
            if path.read_text().strip() != value:
                path.write_text(value)

    def _delete_node(self) -> None:
        with contextlib.suppress(OSError, ApiError, ValueError):
            self.cluster.api().delete(f"/api/v1/nodes/{self.name}")


def _raise_system_exit(signum: int, frame: types.FrameType | None) -> None:
    raise SystemExit(128 + signum)


def watch_owner(node_dir: Path, owner_pid: int) -> int:
    """Poll the owner; once it is gone and the node is still up, stop the node."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # stop() of the owner ends us with SIGTERM
    while pid_alive(owner_pid):
        time.sleep(1)
    if (Path(node_dir) / "node.json").exists():
        log(f"owner {owner_pid} is gone; stopping the node in {node_dir}")
        RealNode.from_state(node_dir).stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="a local cluster with one real node, until Ctrl-C")
    demo.add_argument("--dir", required=True, type=Path)
    demo.add_argument("--image", action="append", default=[], type=Path, help="a docker-archive tar to import")
    stop = sub.add_parser("stop", help="stop a node another process started (and left behind)")
    stop.add_argument("--dir", required=True, type=Path, help="the node's directory")
    watch = sub.add_parser("watch", help="(internal) stop the node in --dir when --owner-pid is gone")
    watch.add_argument("--dir", required=True, type=Path)
    watch.add_argument("--owner-pid", required=True, type=int)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_system_exit)
    try:
        if args.command == "stop":
            RealNode.from_state(args.dir).stop()
            return 0
        if args.command == "watch":
            return watch_owner(args.dir, args.owner_pid)
        with (
            LocalCluster(args.dir / "cluster", fake_nodes=(), lb_pool=NODE_LB_POOL) as cluster,
            RealNode(cluster, args.dir / "node") as node,
        ):
            # ours, not the cluster's handler: the node must stop before the API server does
            signal.signal(signal.SIGTERM, _raise_system_exit)
            for tar in args.image:
                node.import_image(tar)
            print(f"export KUBECONFIG={cluster.kubeconfig}", flush=True)
            while True:
                time.sleep(3600)
    except (NodeError, localcluster.ClusterError) as e:
        log(f"ERROR: {e}")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
