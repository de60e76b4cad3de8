"""Entry point the Pulumi engine runs for `--policy-pack policy`: serves the classroom policies.

The rules live in classroom_policies.py (plain functions, unit-tested without the engine); this
file only names them, sets every one to mandatory and declares each one's config schema so that
`--policy-pack-config` mistakes are refused by the CLI with the key and the accepted type.
"""

import os
import sys

# The engine starts the pack with the pack directory as the working directory, but the module
# search path depends on how the language host launches Python; make the sibling module importable.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import classroom_policies as rules
from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyPack,
    ResourceValidationPolicy,
    StackValidationPolicy,
)

student_data_protected = ResourceValidationPolicy(
    name="student-data-protected",
    description=(
        "PersistentVolumeClaims and Namespaces are protected (protect=True), and StatefulSets declare "
        "no volumeClaimTemplates, so student home directories survive `pulumi destroy`."
    ),
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=rules.validate_student_data_protected,
)

privileged_only_when_configured = ResourceValidationPolicy(
    name="privileged-only-when-configured",
    description=(
        f"A privileged container only where the stack says privileged: true (pod annotation "
        f'{rules.PRIVILEGED_ANNOTATION}: "true", or policy config "privileged").'
    ),
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=rules.validate_privileged_only_when_configured,
    config_schema=PolicyConfigSchema(properties={"privileged": {"type": "boolean"}}),
)

requests_and_limits = ResourceValidationPolicy(
    name="containers-have-requests-and-limits",
    description="Every container and init container sets resource requests and limits.",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=rules.validate_requests_and_limits,
    config_schema=PolicyConfigSchema(properties={"resources": {"type": "array", "items": {"type": "string"}}}),
)

service_ports = ResourceValidationPolicy(
    name="services-expose-configured-ports-only",
    description=(
        f"A Service exposes only the ports the stack configured (annotation "
        f'{rules.ALLOWED_PORTS_ANNOTATION}, or policy config "allowedPorts").'
    ),
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=rules.validate_service_ports,
    config_schema=PolicyConfigSchema(
        properties={"allowedPorts": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 65535}}}
    ),
)

ca_key_not_mounted = StackValidationPolicy(
    name="ssh-ca-key-not-mounted",
    description=(
        f"No pod mounts the SSH CA private key Secret (label {rules.CA_ROLE_LABEL}={rules.CA_ROLE_VALUE}, or a "
        f"'{rules.CA_KEY_ENTRY}' entry): host certificates are signed at deploy time."
    ),
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=rules.validate_ca_key_not_mounted,
    config_schema=PolicyConfigSchema(properties={"initContainers": {"type": "array", "items": {"type": "string"}}}),
)

PolicyPack(
    name="classroom-policies",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=[
        student_data_protected,
        privileged_only_when_configured,
        requests_and_limits,
        service_ports,
        ca_key_not_mounted,
    ],
)
