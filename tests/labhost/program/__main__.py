"""A tiny Pulumi program around LabHost, run by the real engine in tests/labhost.

Reads the labs config, the roster and the CA public key from the JSON file
named by LABHOST_TEST_CONFIG (the test rewrites it between `pulumi up`s).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pulumi

sys.path.insert(0, os.environ["CLASSROOM_REPO"])

from components.errors import ConfigError
from components.labconfig import parse_labs
from components.labs import LabHost, LabHostArgs


@dataclass(frozen=True)
class Person:
    username: str
    labs: bool = True


data = json.loads(Path(os.environ["LABHOST_TEST_CONFIG"]).read_text())
try:
    labs = parse_labs({"labs": data["labs"]}, base_dir=Path.cwd(), people=[Person(**p) for p in data["people"]])
except ConfigError as err:
    raise pulumi.RunError(str(err)) from None

for spec in labs.hosts:
    host = LabHost(
        spec.name,
        LabHostArgs(spec=spec, labs=labs, ca_public_key=data["caPublicKey"], class_name="cis90", term="fall2026"),
    )
    pulumi.export(f"{spec.name}-hostKey", host.host_key)
    pulumi.export(f"{spec.name}-students", list(host.clusters))
