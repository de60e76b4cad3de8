"""The shared words of the stack config: quantities, durations, names.

One definition each, used by every section of the schema (components/schema.py)
so that `homeSize`, `labs.hosts[].storageSize` and `resources.limits.memory`
mean the same thing by "quantity", and `term.grace` and `labs.idleTimeout`
the same thing by "duration".
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal, InvalidOperation

from components.rosterdata import RESERVED_USERNAMES, USERNAME_RE

__all__ = [
    "DNS_LABEL",
    "DNS_SUBDOMAIN",
    "DURATION_ACCEPTED",
    "RESERVED_USERNAMES",
    "USERNAME_RE",
    "parse_duration",
    "quantity_value",
]

# ------------------------------------------------------------------ quantities

# Kubernetes' resource.Quantity without the exponent forms (1e3), which no
# instructor writes and which the chart's values never used.
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?\Z")
_SUFFIX = {
    None: Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}
QUANTITY_PATTERN = _QUANTITY.pattern.replace("\\Z", "$")


def quantity_value(text: str) -> Decimal:
    """Numeric value of a Kubernetes quantity ('2Gi' -> 2147483648); ValueError otherwise."""
    match = _QUANTITY.fullmatch(text)
    if not match:
        raise ValueError(text)
    try:
        return Decimal(match.group(1)) * _SUFFIX[match.group(2)]
    except InvalidOperation:
        raise ValueError(text) from None


# ------------------------------------------------------------------ durations

# One grammar for every duration key, with the unit always written: `30` was
# 30 days for term.grace and 30 seconds for labs.idleTimeout, so a bare number
# is refused rather than guessed. `0` alone needs no unit.
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*\Z")
DURATION_PATTERN = r"^\s*(0|\d+(\.\d+)?\s*(s|m|h|d|w))\s*$"
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
DURATION_ACCEPTED = "a duration with its unit: a number and s, m, h, d or w, such as '90s', '30m', '2h', '7d'"


def parse_duration(value: object) -> timedelta:
    """'90s', '30m', '2h', '7d', '2w' (or '0') -> timedelta; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(value)
    if value == 0 or (isinstance(value, str) and value.strip() == "0"):
        return timedelta(0)
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(value)
    return timedelta(seconds=float(match.group(1)) * _UNIT[match.group(2)])


# ------------------------------------------------------------------ names

DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?\Z")

# Kubernetes metadata names (k8s.io/apimachinery validation.IsQualifiedName and
# IsValidLabelValue): the OpenAPI schema types them only as strings, the API
# server checks their syntax.
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)\Z")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?)\Z")
QUALIFIED_NAME_ACCEPTED = (
    "a Kubernetes key: an optional DNS-subdomain prefix and '/', then at most 63 letters, digits, "
    "'-', '_' or '.', starting and ending with a letter or digit"
)
LABEL_VALUE_ACCEPTED = (
    "a label value: empty, or at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
)


def is_qualified_name(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not DNS_SUBDOMAIN.fullmatch(prefix)):
        return False
    return bool(_QUALIFIED_NAME.fullmatch(name))


def is_label_value(value: str) -> bool:
    return bool(_LABEL_VALUE.fullmatch(value))
