#!/usr/bin/env python3
"""A real local Kubernetes control plane for the e2e tier.

etcd + kube-apiserver + kube-controller-manager + kube-scheduler run as real
processes (built by ``tools/toolchain.sh cluster``), kwok plays the kubelets of
two fake nodes, and a small controller process stands in for the pieces a
cloud would provide: a dynamic provisioner and resizer for the StorageClasses
``local-retain`` (default, Retain) and ``local-delete`` (Delete), and a
MetalLB-like allocator of LoadBalancer addresses from 127.240.0.0/16.
Everything listens on 127.0.0.1 only.

    python tools/localcluster.py start  --dir DIR   # returns once the cluster is usable
    python tools/localcluster.py status --dir DIR
    python tools/localcluster.py stop   --dir DIR

or, from Python (the pytest fixture uses this)::

    with LocalCluster(Path(dir)) as cluster:
        ... cluster.kubeconfig ...
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import types
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parent.parent
PROVISIONER = "classroom.local/hostpath"
STORAGE_CLASSES = {"local-retain": "Retain", "local-delete": "Delete"}
DEFAULT_STORAGE_CLASS = "local-retain"
LB_POOL = ipaddress.IPv4Network("127.240.0.0/16")
SERVICE_CIDR = "10.96.0.0/16"
FAKE_NODES = ("kwok-node-0", "kwok-node-1")
# the order matters: stop() kills in reverse
COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "controllers",
)
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


class ClusterError(RuntimeError):
    """Something the user can act on; printed without a traceback by the CLI."""


def log(msg: str) -> None:
    print(f"[localcluster] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# binaries


def toolchain_bin_dir() -> Path | None:
    """The bin/ of tools/toolchain.sh's cache, if it was built."""
    env_dir = os.environ.get("CLASSROOM_TOOLCHAIN_DIR")
    if env_dir:
        return Path(env_dir) / "bin"
    try:
        out = subprocess.run(
            ["bash", str(REPO / "tools" / "toolchain.sh"), "dir"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return Path(out) / "bin"


def find_binaries() -> dict[str, Path]:
    """Locate every binary, preferring the toolchain's (pinned versions) over PATH."""
    bin_dir = toolchain_bin_dir()
    found: dict[str, Path] = {}
    missing = []
    for name in BINARIES:
        candidate = bin_dir / name if bin_dir else None
        if candidate and candidate.is_file() and os.access(candidate, os.X_OK):
            found[name] = candidate
        elif which := shutil.which(name):
            found[name] = Path(which)
        else:
            missing.append(name)
    stages = bin_dir.parent / "share" / "kwok-stages.yaml" if bin_dir else None
    if stages and stages.is_file():
        found["kwok-stages"] = stages
    else:
        missing.append("kwok-stages.yaml")
    if missing:
        raise ClusterError(
            f"missing binaries: {', '.join(missing)} (looked in {bin_dir} and PATH); run tools/toolchain.sh cluster"
        )
    return found


def free_port() -> int:
    """A free TCP port on loopback (the kernel picks it; the race is harmless here)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------
# PKI


def _pem_key(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int = 0o600) -> None:
    path.write_bytes(data)
    path.chmod(mode)


@dataclass
class Pki:
    """Files of a throwaway cluster CA and the certificates signed by it."""

    dir: Path

    @property
    def ca_crt(self) -> Path:
        return self.dir / "ca.crt"

    def crt(self, name: str) -> Path:
        return self.dir / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    def issue_client(self, name: str, cn: str, org: str | None = None) -> None:
        """A client certificate `name`.crt/.key signed by this CA (kept if it exists)."""
        if self.crt(name).exists() and self.key(name).exists():
            return
        ca_key = serialization.load_pem_private_key(self.key("ca").read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(self.ca_crt.read_bytes())
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        self._issue(name, cn, org, ca_key, ca_cert.subject, ca_cert.not_valid_after_utc)

    def _issue(
        self,
        name: str,
        cn: str,
        org: str | None,
        ca_key: ec.EllipticCurvePrivateKey,
        ca_name: x509.Name,
        not_after: datetime.datetime,
        server: bool = False,
    ) -> None:
        """Write `name`.key and `name`.crt: a new key, certified by the CA for client or server auth."""
        now = datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        usage = x509.oid.ExtendedKeyUsageOID.SERVER_AUTH if server else x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(not_after)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.DNSName("kubernetes"),
                        x509.DNSName("kubernetes.default"),
                        x509.DNSName("kubernetes.default.svc"),
                        x509.DNSName("kubernetes.default.svc.cluster.local"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.IPAddress(ipaddress.ip_address("10.96.0.1")),
                    ]
                ),
                critical=False,
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        _write(self.key(name), _pem_key(key))
        _write(self.crt(name), cert.public_bytes(serialization.Encoding.PEM), 0o644)

    def create(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.ca_crt.exists():
            return  # a restart keeps identities so kubeconfigs stay valid
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "classroom-localcluster-ca")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write(self.key("ca"), _pem_key(ca_key))
        _write(self.ca_crt, ca.public_bytes(serialization.Encoding.PEM), 0o644)

        not_after = now + datetime.timedelta(days=30)
        self._issue("apiserver", "kube-apiserver", None, ca_key, ca_name, not_after, server=True)
        self._issue("admin", "classroom-admin", "system:masters", ca_key, ca_name, not_after)
        self._issue("controller-manager", "system:kube-controller-manager", None, ca_key, ca_name, not_after)
        self._issue("scheduler", "system:kube-scheduler", None, ca_key, ca_name, not_after)
        # service-account token signing pair (RSA: what every client expects)
        sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write(self.key("sa"), _pem_key(sa))
        _write(
            self.dir / "sa.pub",
            sa.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
            0o644,
        )


def write_kubeconfig(path: Path, server: str, pki: Pki, identity: str) -> None:
    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "localcluster",
                "cluster": {"server": server, "certificate-authority-data": b64(pki.ca_crt)},
            }
        ],
        "users": [
            {
                "name": identity,
                "user": {
                    "client-certificate-data": b64(pki.crt(identity)),
                    "client-key-data": b64(pki.key(identity)),
                },
            }
        ],
        "contexts": [{"name": "localcluster", "context": {"cluster": "localcluster", "user": identity}}],
        "current-context": "localcluster",
    }
    _write(path, yaml.safe_dump(config, sort_keys=False).encode())


# --------------------------------------------------------------------------
# a minimal API client (stdlib only, so the controllers need no extra package)


class ApiError(RuntimeError):
    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:300]}")
        self.status = status


class KubeApi:
    """Just enough of the Kubernetes REST API for the controllers and tests."""

    def __init__(self, kubeconfig: Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        self.server = cluster["server"].rstrip("/")
        tmp = kubeconfig.parent / ".api-client"
        tmp.mkdir(exist_ok=True, mode=0o700)
        ca, crt, key = tmp / "ca.crt", tmp / "client.crt", tmp / "client.key"
        for path, data in (
            (ca, cluster["certificate-authority-data"]),
            (crt, user["client-certificate-data"]),
            (key, user["client-key-data"]),
        ):
            _write(path, base64.b64decode(data))
        self.ctx = ssl.create_default_context(cafile=str(ca))
        self.ctx.load_cert_chain(str(crt), str(key))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 10,
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raise ApiError(e.code, method, path, e.read().decode(errors="replace")) from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode(errors="replace")

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def create(self, path: str, obj: dict[str, Any]) -> Any:
        """POST, treating 'already exists' as success (idempotent restarts)."""
        try:
            return self.request("POST", path, obj)
        except ApiError as e:
            if e.status != 409:
                raise
            return None

    def merge_patch(self, path: str, patch: dict[str, Any]) -> Any:
        return self.request("PATCH", path, patch, "application/merge-patch+json")

    def delete(self, path: str) -> Any:
        try:
            return self.request("DELETE", path)
        except ApiError as e:
            if e.status != 404:
                raise
            return None


# --------------------------------------------------------------------------
# the stand-in controllers (run as `localcluster.py controllers --dir DIR`)


def parse_quantity(q: str) -> int:
    """Bytes of a Kubernetes quantity such as 10Gi, 500M or 1e9."""
    suffixes = {
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
        "Pi": 2**50,
        "Ei": 2**60,
        "k": 10**3,
        "M": 10**6,
        "G": 10**9,
        "T": 10**12,
        "P": 10**15,
        "E": 10**18,
    }
    q = str(q).strip()
    for suffix in sorted(suffixes, key=len, reverse=True):
        if q.endswith(suffix):
            return int(float(q[: -len(suffix)]) * suffixes[suffix])
    if q.endswith("m"):
        return int(float(q[:-1]) / 1000)
    return int(float(q))


class Controllers:
    """Provisioner, resizer, reclaimer and LoadBalancer allocator in one poll loop.

    Polling (not watches) keeps this small and restart-safe: every pass derives
    what to do from the current state alone.
    """

    def __init__(self, api: KubeApi, volumes_dir: Path, lb_pool: ipaddress.IPv4Network = LB_POOL) -> None:
        self.api = api
        self.volumes_dir = volumes_dir
        self.lb_pool = lb_pool

    def run_once(self) -> None:
        classes = {
            sc["metadata"]["name"]: sc
            for sc in self.api.get("/apis/storage.k8s.io/v1/storageclasses")["items"]
            if sc.get("provisioner") == PROVISIONER
        }
        pvs = self.api.get("/api/v1/persistentvolumes")["items"]
        pvcs = self.api.get("/api/v1/persistentvolumeclaims")["items"]
        self.provision(classes, pvs, pvcs)
        self.resize(pvs, pvcs)
        self.reclaim(pvs)
        self.allocate_load_balancers()

    def provision(self, classes: dict[str, Any], pvs: list[dict[str, Any]], pvcs: list[dict[str, Any]]) -> None:
        claimed = {
            (pv["spec"]["claimRef"].get("namespace"), pv["spec"]["claimRef"].get("name"))
            for pv in pvs
            if pv["spec"].get("claimRef")
        }
        for pvc in pvcs:
            meta, spec = pvc["metadata"], pvc["spec"]
            cls = spec.get("storageClassName")
            if (
                cls not in classes
                or pvc.get("status", {}).get("phase") != "Pending"
                or spec.get("volumeName")
                or meta.get("deletionTimestamp")
                or (meta["namespace"], meta["name"]) in claimed
            ):
                continue
            pv_name = f"pvc-{meta['uid']}"
            path = self.volumes_dir / pv_name
            path.mkdir(parents=True, exist_ok=True)
            storage = spec["resources"]["requests"]["storage"]
            pv = {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {
                    "name": pv_name,
                    "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
                },
                "spec": {
                    "capacity": {"storage": storage},
                    "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": classes[cls].get("reclaimPolicy", "Delete"),
                    "storageClassName": cls,
                    "volumeMode": spec.get("volumeMode", "Filesystem"),
                    "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
                    "claimRef": {
                        "apiVersion": "v1",
                        "kind": "PersistentVolumeClaim",
                        "namespace": meta["namespace"],
                        "name": meta["name"],
                        "uid": meta["uid"],
                    },
                },
            }
            self.api.create("/api/v1/persistentvolumes", pv)
            log(f"provisioned {pv_name} ({storage}, {cls}) for {meta['namespace']}/{meta['name']}")

    def resize(self, pvs: list[dict[str, Any]], pvcs: list[dict[str, Any]]) -> None:
        """Grow PV and PVC status like the external-resizer does for a CSI volume."""
        by_name = {pv["metadata"]["name"]: pv for pv in pvs}
        for pvc in pvcs:
            meta, spec, status = pvc["metadata"], pvc["spec"], pvc.get("status", {})
            pv = by_name.get(spec.get("volumeName", ""))
            if (
                pv is None
                or status.get("phase") != "Bound"
                or pv["metadata"].get("annotations", {}).get("pv.kubernetes.io/provisioned-by") != PROVISIONER
            ):
                continue
            wanted = spec["resources"]["requests"]["storage"]
            have = status.get("capacity", {}).get("storage", "0")
            if parse_quantity(wanted) <= parse_quantity(have):
                continue
            if parse_quantity(pv["spec"]["capacity"]["storage"]) < parse_quantity(wanted):
                self.api.merge_patch(
                    f"/api/v1/persistentvolumes/{pv['metadata']['name']}",
                    {"spec": {"capacity": {"storage": wanted}}},
                )
            ns, name = meta["namespace"], meta["name"]
            self.api.merge_patch(
                f"/api/v1/namespaces/{ns}/persistentvolumeclaims/{name}/status",
                {
                    "status": {
                        "capacity": {"storage": wanted},
                        "allocatedResources": {"storage": wanted},
                        "allocatedResourceStatuses": None,
                        "conditions": None,
                    }
                },
            )
            log(f"expanded {ns}/{name} from {have} to {wanted}")

    def reclaim(self, pvs: list[dict[str, Any]]) -> None:
        """Delete released PVs of a Delete class (and their data); Retain keeps both."""
        for pv in pvs:
            meta, spec = pv["metadata"], pv["spec"]
            if (
                pv.get("status", {}).get("phase") == "Released"
                and spec.get("persistentVolumeReclaimPolicy") == "Delete"
                and meta.get("annotations", {}).get("pv.kubernetes.io/provisioned-by") == PROVISIONER
            ):
                path = Path(spec["hostPath"]["path"])
                if path.parent == self.volumes_dir:
                    shutil.rmtree(path, ignore_errors=True)
                self.api.delete(f"/api/v1/persistentvolumes/{meta['name']}")
                log(f"deleted released volume {meta['name']} (reclaimPolicy Delete)")

    def allocate_load_balancers(self) -> None:
        services = self.api.get("/api/v1/services")["items"]
        used = {
            ing.get("ip")
            for svc in services
            for ing in (svc.get("status", {}).get("loadBalancer", {}).get("ingress") or [])
        }
        pool = (str(ip) for ip in self.lb_pool.hosts())
        for svc in services:
            if svc["spec"].get("type") != "LoadBalancer":
                continue
            if svc.get("status", {}).get("loadBalancer", {}).get("ingress"):
                continue
            # honour an explicit request inside the pool, as MetalLB does
            requested = svc["spec"].get("loadBalancerIP")
            if requested and ipaddress.ip_address(requested) in self.lb_pool and requested not in used:
                ip = requested
            else:
                ip = next(a for a in pool if a not in used)
            used.add(ip)
            meta = svc["metadata"]
            self.api.merge_patch(
                f"/api/v1/namespaces/{meta['namespace']}/services/{meta['name']}/status",
                {"status": {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}}},
            )
            log(f"assigned {ip} to LoadBalancer {meta['namespace']}/{meta['name']}")


def run_controllers(cluster_dir: Path, owner_pid: int | None, lb_pool: ipaddress.IPv4Network = LB_POOL) -> None:
    """Poll loop; if the owning process dies without stopping us, tear the cluster down."""
    stop = False

    def on_signal(signum: int, frame: types.FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    api = KubeApi(cluster_dir / "kubeconfig")
    controllers = Controllers(api, cluster_dir / "volumes", lb_pool)
    while not stop:
        if owner_pid and not pid_alive(owner_pid):
            log(f"owner process {owner_pid} is gone; stopping the cluster")
            LocalCluster(cluster_dir).stop(keep_controllers=True)
            return
        try:
            controllers.run_once()
        except (ApiError, OSError, KeyError, ValueError) as e:
            # the API may be restarting; the next pass starts from fresh state
            log(f"controller pass failed: {e}")
        time.sleep(0.5)


# --------------------------------------------------------------------------
# process management


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@dataclass
class LocalCluster:
    """Start/stop a local control plane in `dir`; also a context manager."""

    dir: Path
    owner_pid: int | None = None
    # kwok's fake nodes; () for a cluster whose pods must all land on a real node (tools/node.py)
    fake_nodes: tuple[str, ...] = FAKE_NODES
    # LoadBalancer addresses; a real node routes a pool outside 127/8 to its kube-proxy
    lb_pool: ipaddress.IPv4Network = LB_POOL
    ports: dict[str, int] = field(default_factory=dict)
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dir = Path(self.dir).resolve()

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def state_file(self) -> Path:
        return self.dir / "cluster.json"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    def api(self) -> KubeApi:
        return KubeApi(self.kubeconfig)

    # ---- lifecycle ----------------------------------------------------------

    def __enter__(self) -> LocalCluster:
        self._previous_sigterm: Any = None

        def on_sigterm(signum: int, frame: types.FrameType | None) -> None:
            # Stop the cluster, then let the signal do what it did before
            # (usually: end the process). Raising instead would only fail the
            # current test under pytest, which catches SystemExit per test.
            self.stop()
            signal.signal(signal.SIGTERM, self._previous_sigterm or signal.SIG_DFL)
            os.kill(os.getpid(), signum)

        with contextlib.suppress(ValueError):  # not in the main thread: no handler
            self._previous_sigterm = signal.signal(signal.SIGTERM, on_sigterm)
        try:
            self.start(owner_pid=os.getpid())
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            if self._previous_sigterm is not None:
                signal.signal(signal.SIGTERM, self._previous_sigterm)

    def start(self, owner_pid: int | None = None, timeout: float = 180) -> None:
        if self.running():
            raise ClusterError(f"a cluster is already running in {self.dir}; stop it first")
        bins = find_binaries()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        (self.dir / "volumes").mkdir(exist_ok=True)
        pki = Pki(self.dir / "pki")
        pki.create()
        # the API server's identity towards kubelets (logs, exec, port-forward of a real node)
        pki.issue_client("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters")
        self.ports = {
            "etcd": free_port(),
            "etcd-peer": free_port(),
            "apiserver": free_port(),
            "controller-manager": free_port(),
            "scheduler": free_port(),
            "kwok": free_port(),
        }
        server = f"https://127.0.0.1:{self.ports['apiserver']}"
        write_kubeconfig(self.kubeconfig, server, pki, "admin")
        write_kubeconfig(self.dir / "controller-manager.kubeconfig", server, pki, "controller-manager")
        write_kubeconfig(self.dir / "scheduler.kubeconfig", server, pki, "scheduler")
        deadline = time.monotonic() + timeout
        t0 = time.monotonic()

        etcd_url = f"http://127.0.0.1:{self.ports['etcd']}"
        peer_url = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        log(f"starting etcd on {etcd_url}")
        self._spawn(
            "etcd",
            [
                str(bins["etcd"]),
                "--name=localcluster",
                f"--data-dir={self.dir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=localcluster={peer_url}",
                "--unsafe-no-fsync",  # a throwaway test store: durability costs seconds per test
                "--log-level=warn",
            ],
        )
        self._wait("etcd", deadline, self._etcd_healthy)

        log(f"starting kube-apiserver on {server}")
        self._spawn(
            "kube-apiserver",
            [
                str(bins["kube-apiserver"]),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.ports['apiserver']}",
                f"--cert-dir={pki.dir}",
                f"--tls-cert-file={pki.crt('apiserver')}",
                f"--tls-private-key-file={pki.key('apiserver')}",
                f"--client-ca-file={pki.ca_crt}",
                f"--kubelet-client-certificate={pki.crt('apiserver-kubelet-client')}",
                f"--kubelet-client-key={pki.key('apiserver-kubelet-client')}",
                "--authorization-mode=Node,RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.dir / 'sa.pub'}",
                f"--service-account-signing-key-file={pki.key('sa')}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",  # the login server's systemd mode is privileged
                # the `kubernetes` Service would need a non-loopback endpoint address
                "--endpoint-reconciler-type=none",
                "--profiling=false",
            ],
        )
        self._wait("kube-apiserver", deadline, self._api_ready)
        api = self.api()

        log("starting kube-controller-manager, kube-scheduler, kwok")
        kcm_kc = self.dir / "controller-manager.kubeconfig"
        self._spawn(
            "kube-controller-manager",
            [
                str(bins["kube-controller-manager"]),
                *self._control_loop_flags(kcm_kc, "controller-manager", "kcm-serving"),
                f"--service-account-private-key-file={pki.key('sa')}",
                f"--root-ca-file={pki.ca_crt}",
                "--use-service-account-credentials=true",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--controllers=*",
            ],
        )
        sched_kc = self.dir / "scheduler.kubeconfig"
        self._spawn(
            "kube-scheduler",
            [
                str(bins["kube-scheduler"]),
                *self._control_loop_flags(sched_kc, "scheduler", "scheduler-serving"),
            ],
        )
        self._spawn(
            "kwok",
            [
                str(bins["kwok"]),
                f"--kubeconfig={self.kubeconfig}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                f"--config={bins['kwok-stages']}",
                "--cidr=10.244.0.0/16",
                "--node-ip=127.0.0.1",
                f"--server-address=127.0.0.1:{self.ports['kwok']}",
            ],
        )
        self._spawn(
            "controllers",
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "controllers",
                f"--dir={self.dir}",
                f"--lb-pool={self.lb_pool}",
                *([f"--owner-pid={owner_pid}"] if owner_pid else []),
            ],
        )
        self._save_state(server)

        self._create_storage_classes(api)
        self._create_nodes(api, self.fake_nodes)
        self._wait("fake nodes Ready", deadline, lambda: self._nodes_ready(api, self.fake_nodes))
        self._wait("default ServiceAccount", deadline, lambda: self._default_sa(api))
        log(f"cluster ready in {time.monotonic() - t0:.1f}s; KUBECONFIG={self.kubeconfig}")

    def _control_loop_flags(self, kubeconfig: Path, port: str, cert_dir: str) -> list[str]:
        """Flags the controller manager and the scheduler share: their kubeconfig for the API server and
        for authenticating and authorizing their own callers, a loopback serving port and its cert dir."""
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports[port]}",
            f"--cert-dir={self.dir / 'pki' / cert_dir}",
            "--leader-elect=false",
            "--profiling=false",
        ]

    def _spawn(self, name: str, argv: list[str]) -> None:
        logfile = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        try:
            # own session: a Ctrl-C in the terminal reaches us, and we stop
            # the components in order, instead of all of them dying at once
            proc = subprocess.Popen(
                argv,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.dir,
            )
        finally:
            logfile.close()
        self._procs[name] = proc
        self._save_state()

    def _save_state(self, server: str | None = None) -> None:
        state = self._load_state()
        state["pids"] = {name: p.pid for name, p in self._procs.items()}
        state["ports"] = self.ports
        if server:
            state["server"] = server
        self._write_state(state)

    def _write_state(self, state: dict[str, Any]) -> None:
        # atomic: a concurrent `stop` must never read a half-written file
        tmp = self.state_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.state_file)

    def _load_state(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.state_file.read_text()))
        except (OSError, ValueError):
            return {}

    def _wait(self, what: str, deadline: float, check: Any) -> None:
        last_error = ""
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    tail = (self.logs / f"{name}.log").read_text(errors="replace")[-2000:]
                    raise ClusterError(
                        f"{name} exited with {proc.returncode} while waiting for {what}; "
                        f"log {self.logs / (name + '.log')} ends with:\n{tail}"
                    )
            try:
                if check():
                    return
            except (OSError, ApiError, KeyError, ValueError) as e:
                last_error = str(e)
            time.sleep(0.3)
        raise ClusterError(f"timed out waiting for {what} ({last_error}); logs in {self.logs}")

    def _etcd_healthy(self) -> bool:
        url = f"http://127.0.0.1:{self.ports['etcd']}/health"
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(json.loads(resp.read()).get("health") == "true")

    def _api_ready(self) -> bool:
        return self.api().request("GET", "/readyz", timeout=3) == "ok"

    @staticmethod
    def _create_storage_classes(api: KubeApi) -> None:
        for name, policy in STORAGE_CLASSES.items():
            annotations = {}
            if name == DEFAULT_STORAGE_CLASS:
                annotations["storageclass.kubernetes.io/is-default-class"] = "true"
            api.create(
                "/apis/storage.k8s.io/v1/storageclasses",
                {
                    "apiVersion": "storage.k8s.io/v1",
                    "kind": "StorageClass",
                    "metadata": {"name": name, "annotations": annotations},
                    "provisioner": PROVISIONER,
                    "reclaimPolicy": policy,
                    "allowVolumeExpansion": True,
                    "volumeBindingMode": "Immediate",
                },
            )

    @staticmethod
    def _create_nodes(api: KubeApi, names: tuple[str, ...]) -> None:
        for name in names:
            api.create(
                "/api/v1/nodes",
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "annotations": {
                            "kwok.x-k8s.io/node": "fake",
                            "node.alpha.kubernetes.io/ttl": "0",
                        },
                        "labels": {
                            "type": "kwok",
                            "kubernetes.io/hostname": name,
                            "kubernetes.io/os": "linux",
                            "kubernetes.io/arch": "amd64",
                        },
                    },
                    "status": {
                        "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                        "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                    },
                },
            )

    @staticmethod
    def _nodes_ready(api: KubeApi, names: tuple[str, ...]) -> bool:
        nodes = api.get("/api/v1/nodes")["items"]
        ready = {
            n["metadata"]["name"]
            for n in nodes
            for c in n.get("status", {}).get("conditions") or []
            if c["type"] == "Ready" and c["status"] == "True"
        }
        return set(names) <= ready

    @staticmethod
    def _default_sa(api: KubeApi) -> bool:
        api.get("/api/v1/namespaces/default/serviceaccounts/default")
        return True

    def running(self) -> bool:
        return any(pid_alive(p) and self._owns(p) for p in self._load_state().get("pids", {}).values())

    def stop(self, keep_controllers: bool = False) -> None:
        """Stop every component this directory's state names, newest first."""
        pids: dict[str, int] = self._load_state().get("pids", {})
        pids.update({name: p.pid for name, p in self._procs.items()})
        # a start killed between spawning and saving leaves components the
        # state does not name: find them by their session and command line
        known = set(pids.values())
        for pid, name in self._discover():
            if pid not in known:
                pids[f"{name}#{pid}" if name in pids else name] = pid
        if keep_controllers:  # the controllers process is the caller
            pids.pop("controllers", None)
        # a stale state file may name pids the kernel has since reused: only
        # signal processes whose command line names this cluster's directory
        pids = {n: pid for n, pid in pids.items() if self._owns(pid)}
        rank = {n: i for i, n in enumerate(COMPONENTS)}
        order = sorted(pids, key=lambda n: rank.get(n.split("#")[0], -1), reverse=True)
        for name in order:
            self._terminate(name, pids[name])
        for proc in self._procs.values():
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                proc.wait(timeout=1)
        self._procs.clear()
        if self.state_file.exists():
            state = self._load_state()
            state["pids"] = {}
            self._write_state(state)
        if order:
            log(f"stopped {', '.join(order)}")

    def _discover(self) -> list[tuple[int, str]]:
        """(pid, component) of session leaders whose command line names this directory."""
        found = []
        names = {Path(b).name for b in BINARIES}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid, session = int(entry.name), int(stat[3])
            if session != pid or not any(str(self.dir) in a for a in argv):
                continue
            exe = Path(argv[0]).name
            if exe in names:
                found.append((pid, exe))
            elif "controllers" in argv and any(a.endswith("localcluster.py") for a in argv):
                found.append((pid, "controllers"))
        return found

    def _owns(self, pid: int) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return False
        return str(self.dir) in cmdline

    @staticmethod
    def _terminate(name: str, pid: int, grace: float = 10) -> None:
        if not pid_alive(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)  # each component leads its own session
        end = time.monotonic() + grace
        while time.monotonic() < end and pid_alive(pid):
            time.sleep(0.1)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        if pid_alive(pid):
            log(f"{name} ignored SIGTERM; killing it")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)

    def status(self) -> dict[str, Any]:
        state = self._load_state()
        procs = {name: pid_alive(pid) and self._owns(pid) for name, pid in state.get("pids", {}).items()}
        api_ok = False
        if any(procs.values()) and self.kubeconfig.exists():
            with contextlib.suppress(OSError, ApiError, ValueError, KeyError):
                api_ok = self._api_ready()
        return {
            "dir": str(self.dir),
            "server": state.get("server"),
            "processes": procs,
            "api_ready": api_ok,
            "kubeconfig": str(self.kubeconfig),
        }


def _raise_system_exit(signum: int, frame: types.FrameType | None) -> None:
    # turns SIGTERM into an exception so `finally` / __exit__ stop the cluster
    raise SystemExit(128 + signum)


# --------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("start", "stop", "status", "controllers"):
        p = sub.add_parser(name)
        p.add_argument("--dir", required=True, type=Path, help="cluster state directory")
        if name == "controllers":
            p.add_argument("--owner-pid", type=int, default=None)
        if name in ("controllers", "start"):
            p.add_argument(
                "--lb-pool",
                type=ipaddress.IPv4Network,
                default=LB_POOL,
                help="LoadBalancer address pool (default %(default)s)",
            )
    args = parser.parse_args(argv)
    cluster = LocalCluster(args.dir, lb_pool=getattr(args, "lb_pool", LB_POOL))
    try:
        if args.command == "start":
            signal.signal(signal.SIGTERM, _raise_system_exit)  # a killed start cleans up too
            try:
                cluster.start()
            except BaseException:
                cluster.stop()
                raise
            print(f"export KUBECONFIG={cluster.kubeconfig}")
        elif args.command == "stop":
            cluster.stop()
        elif args.command == "status":
            st = cluster.status()
            print(json.dumps(st, indent=2))
            return 0 if st["api_ready"] else 1
        else:
            run_controllers(cluster.dir, args.owner_pid, args.lb_pool)
    except ClusterError as e:
        log(f"ERROR: {e}")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
