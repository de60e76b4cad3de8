"""Names the program, the in-pod scripts and the policy pack must agree on: one home for each.

The policy pack (policy/classroom_policies.py) runs outside this package and keeps its own copy of
the names it reads; tests/unit/test_contract.py checks that copy against this module, and that the
scripts mounted into the pod use the paths named here.
"""

from __future__ import annotations

# ---- labels and annotations (the policy pack reads these)
ROLE_LABEL = "classroom/role"
CA_ROLE = "ssh-ca"  # a Secret with the CA private key: no pod may mount it
HOST_KEYS_ROLE = "ssh-host-keys"  # the host keys and certificates a pod mounts instead
LAB_SESSION_ROLE = "lab-session"  # the hook's labd URLs and session key
PRIVILEGED_ANNOTATION = "classroom/privileged"  # "true" only when the stack asked for privileged mode
ALLOWED_PORTS_ANNOTATION = "classroom/allowed-ports"  # "22,80": the ports the stack configured
CHECKSUM_ANNOTATION = "classroom/config-checksum"  # pod files' digest: a change rolls the pod
HOST_PRINCIPALS_ANNOTATION = "classroom/host-principals-checksum"  # a lab host's: new names roll it
STACK_LABEL = "classroom/stack"

# ---- Secret entries
CA_KEY_ENTRY = "ca_key"  # the cloud-server chart's spelling, which ssh.existingSecret keeps
CA_PUBLIC_ENTRY = "ca_key_pub"
CHART_CA_PUBLIC_ENTRY = "ca_key.pub"

# ---- paths inside the login pod (sshd_config, rc.local and the hook name them too)
HOST_KEY_DIR = "/etc/ssh/host"
CA_PUBLIC_DIR = "/etc/ssh/classroom"
REVOKED_KEYS_FILE = "/etc/ssh/classroom-revoked.krl"
ROSTER_MOUNT = "/etc/classroom/roster"
LAB_SESSION_DIR = "/etc/lab-session-hook"
LAB_SCRIPTS_DIR = "/etc/classroom/lab-session"
