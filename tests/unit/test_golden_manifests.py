"""Both checked-in stacks render the same Kubernetes objects as the golden copy in tests/fixtures/golden.

Moving code between modules (narrower component inputs, shared pod builders, one contract module)
must not change a single byte of what reaches the API server. The golden files are the objects of
`stacks/Pulumi.dev.yaml` and `stacks/Pulumi.cis90-fall2026.yaml`, sorted by kind, namespace and name,
with what is random on every render (generated keys, certificates, checksums over them) replaced by
a placeholder, and every multi-line value (scripts, config files) as a list of its lines. A change
that means to alter the objects regenerates them on purpose:

    CLASSROOM_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_golden_manifests.py

and the diff of the golden file shows the reviewer exactly what changed.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from typing import Any

import pytest

from tests.harness import ROOT, manifests_for, stack_raw

GOLDEN = ROOT / "tests" / "fixtures" / "golden"
STACKS = ("dev", "cis90-fall2026")
# Key material and digests that differ on every render: SSH keys and certificates, 64-hex checksums.
RANDOM = re.compile(
    r"(?:ssh-(?:ed25519|rsa)(?:-cert-v01@openssh\.com)?|ecdsa-sha2-nistp256) AAAA[A-Za-z0-9+/=]+|\b[0-9a-f]{64}\b"
)


def normalised(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: normalised(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalised(v) for v in value]
    if isinstance(value, str):
        if "PRIVATE KEY-----" in value:
            return "<private key>"
        value = RANDOM.sub("<random>", value)
        # A script or config file in a ConfigMap as its lines, so a diff names the line that changed.
        return value.split("\n") if "\n" in value else value
    return value


def golden_text(stack: str) -> str:
    def order(manifest: dict[str, Any]) -> tuple[str, str, str]:
        meta = manifest.get("metadata") or {}
        return (manifest.get("kind", ""), meta.get("namespace", ""), meta.get("name", ""))

    manifests = sorted((normalised(m) for m in manifests_for(stack_raw(stack), stack)), key=order)
    return json.dumps(manifests, indent=1, sort_keys=True) + "\n"


def test_what_is_random_is_only_keys_certificates_and_checksums() -> None:
    # Two renders differ before normalising (fresh keys) and not after: the placeholders hide
    # exactly the randomness and nothing a refactoring could change.
    first, second = (manifests_for(stack_raw("cis90-fall2026"), "cis90-fall2026") for _ in range(2))
    assert first != second
    assert golden_text("cis90-fall2026") == golden_text("cis90-fall2026")


@pytest.mark.parametrize("stack", STACKS)
def test_the_stack_renders_its_golden_objects(stack: str) -> None:
    path = GOLDEN / f"{stack}.json"
    text = golden_text(stack)
    if os.environ.get("CLASSROOM_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"{path} is missing: CLASSROOM_UPDATE_GOLDEN=1 writes it"
    expected = path.read_text()
    diff = "".join(
        difflib.unified_diff(
            expected.splitlines(keepends=True), text.splitlines(keepends=True), str(path), "rendered now", n=2
        )
    )
    assert text == expected, (
        f"the {stack} stack's objects changed (if on purpose: CLASSROOM_UPDATE_GOLDEN=1):\n{diff[:6000]}"
    )
