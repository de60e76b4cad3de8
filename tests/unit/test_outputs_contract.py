"""The stack outputs the instructor tools read are the ones the program exports.

`classroom roster` and `classroom term` read the stack's outputs (ops/engine.py); a renamed
export would make them silently find nothing (this once happened with
`studentCertificates`).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
READERS = [ROOT / "ops" / "roster.py", ROOT / "ops" / "term.py"]


def exported() -> set[str]:
    return set(re.findall(r'pulumi\.export\(\s*"([A-Za-z]+)"', (ROOT / "__main__.py").read_text()))


def read_by(path: Path) -> set[str]:
    text = path.read_text()
    names = set(re.findall(r'outputs(?:\.get\(|\[)"([A-Za-z]+)"', text))
    return names


def test_the_program_exports_the_ssh_and_certificate_outputs() -> None:
    assert {"sshHost", "sshPort", "knownHostsLine", "roster", "studentCertificates"} <= exported()


def test_every_output_the_tools_read_is_exported() -> None:
    names = exported()
    for reader in READERS:
        wanted = read_by(reader)
        assert wanted, f"{reader.name}: found no output it reads (has the access pattern changed?)"
        assert wanted <= names, f"{reader.name} reads outputs the program never exports: {wanted - names}"
