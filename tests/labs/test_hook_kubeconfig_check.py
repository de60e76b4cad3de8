"""The hook's kubeconfig check against the shapes a student's cluster-admin can give it.

k3d copies the kubeconfig out of the student's own node, which their cluster-admin can rewrite, and
labd signs whatever it relays: the check in the hook is what keeps an exec user or a foreign server
out of the home. Called directly on the hook as shipped (components/scripts/lab-session-hook).
"""

from __future__ import annotations

import pytest

from tests.hookmodule import load_hook

HOOK_MODULE = load_hook()
CONFIG = {"url": "http://lab1.example.edu:8787", "urls": {}}
GOOD = """\
apiVersion: v1
kind: Config
clusters:
- name: k3d-lab-alice
  cluster:
    certificate-authority-data: QUJD
    server: https://alice.lab.example.edu:20000
users:
- name: admin@k3d-lab-alice
  user:
    client-certificate-data: QUJD
    client-key-data: QUJD
"""
JSON_EXEC = (
    '{"apiVersion": "v1", "clusters": [{"name": "c", "cluster": {"server": '
    '"https://alice.lab.example.edu:20000"}}], "users": [{"name": "u", "user": '
    '{"exec": {"command": "/bin/sh"}}}]}'
)
REFUSED = {
    "exec as a JSON key": JSON_EXEC,
    "exec in flow style": GOOD.replace("    client-key-data: QUJD\n", "    client-key-data: QUJD\n    {exec: x}\n"),
    "quoted auth-provider": GOOD.replace("    client-key-data: QUJD\n", "    'auth-provider': {name: oidc}\n"),
    "exec spelt with a YAML escape": GOOD.replace(
        "    client-key-data: QUJD\n", '    "\\x65xec": {command: /bin/sh}\n'
    ),
    "explicit key": GOOD.replace("    client-key-data: QUJD\n", "    ? exec\n    : {command: /bin/sh}\n"),
    "server in flow style elsewhere": GOOD.replace(
        "    server: https://alice.lab.example.edu:20000\n", "    {server: 'https://bob.lab.example.edu:20000'}\n"
    ),
    "lookalike domain": GOOD.replace("alice.lab.example.edu", "alice.evil.example"),
}


def test_a_kubeconfig_of_the_students_own_cluster_passes() -> None:
    HOOK_MODULE.check_kubeconfig(CONFIG, "alice", GOOD, "alice.lab.example.edu")
    HOOK_MODULE.check_kubeconfig(
        CONFIG, "alice", GOOD.replace("alice.lab.example.edu", "lab1.example.edu"), "alice.lab.example.edu"
    )


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_hostile_kubeconfig_is_refused(name: str) -> None:
    with pytest.raises(HOOK_MODULE.HookError, match="refused, nothing written"):
        HOOK_MODULE.check_kubeconfig(CONFIG, "alice", REFUSED[name], "alice.lab.example.edu")
