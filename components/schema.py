# mypy: disable-error-code="misc"
# (pydantic fields are declared as Field(**doc(...)); mypy cannot see through the unpacking)
"""The stack config, declared once: every `classroom:` key with its type, default, rules and meaning.

pydantic v2 models, one per section. components/config.py validates the
engine's values against `StackModel` and converts the result into the frozen
dataclasses the components consume; the README reference tables and
`stacks/stack.schema.json` (for the YAML language server) are generated from
these models by components/reference.py.

Rules for this file:
- a field's name is its key in the stack file, so the error path an
  instructor reads (`extraMounts[1].path`) is the model's own location;
- every field says what it accepts (`accepted`) in the words the error uses,
  and has a `description` the README prints;
- a field's checks are a `BeforeValidator` that raises `invalid(...)`, so no
  pydantic wording ("Input should be ...") ever reaches an instructor; rules
  that relate keys to each other are `model_validator(mode="after")`s that
  name the key they blame with `sub=`.
"""

from __future__ import annotations

import base64
import difflib
import ipaddress
import posixpath
import re
import string
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from components import k8sschema
from components.errors import ConfigError
from components.rosterdata import (
    FINGERPRINT_RE,
    KEY_ACCEPTED,
    ROLES,
    USERNAME_ACCEPTED,
    normalize_public_key,
)
from components.vocabulary import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    DURATION_ACCEPTED,
    DURATION_PATTERN,
    LABEL_VALUE_ACCEPTED,
    QUALIFIED_NAME_ACCEPTED,
    QUANTITY_PATTERN,
    RESERVED_USERNAMES,
    USERNAME_RE,
    is_label_value,
    is_qualified_name,
    parse_duration,
    quantity_value,
)

# ============================================================== error plumbing

_HIDDEN = "<hidden>"


def invalid(accepted: str, *, sub: Sequence[str | int] = (), value: Any = None, hide: bool = False) -> Exception:
    """The one error a validator raises: what is accepted, optionally blaming a sub-key."""
    return PydanticCustomError(
        "classroom",
        "{accepted}",
        {"accepted": accepted, "sub": tuple(sub), "value": value, "hide": hide, "has_value": bool(sub)},
    )


def key_path(loc: Sequence[str | int]) -> str:
    """('extraMounts', 1, 'path') -> 'extraMounts[1].path'; union tags (~...) are dropped."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith("~"):
            continue
        else:
            text = part if re.fullmatch(r"[A-Za-z0-9_./@:+-]+", part) else repr(part)
            out += f".{text}" if out else text
    return out


_GENERIC = {
    "missing": "a value (required)",
    "model_type": "a mapping (key: value pairs)",
    "model_attributes_type": "a mapping (key: value pairs)",
    "dict_type": "a mapping (key: value pairs)",
    "list_type": "a list",
    "string_type": "a string",
    "int_type": "an integer",
    "bool_type": "true or false",
}


def _field_accepted(root: type[BaseModel], loc: Sequence[str | int]) -> str:
    """The `accepted` text of the field at `loc` under `root` ('' when it cannot be found)."""
    model: Any = root
    info = None
    for part in loc:
        if isinstance(part, int) or part.startswith("~"):
            continue
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return ""
        info = fields[part]
        model = _section_in(info.annotation)
    extra = info.json_schema_extra if info is not None else None
    return str(extra.get("x-accepted", "")) if isinstance(extra, dict) else ""


def _section_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _section_in(arg)
        if found is not None:
            return found
    return None


def config_error(error: ValidationError, root: type[BaseModel] | None = None) -> ConfigError:
    """The first problem pydantic found, as one ConfigError line."""
    first = error.errors(include_url=False)[0]
    ctx = first.get("ctx") or {}
    loc = tuple(first["loc"]) + tuple(ctx.get("sub", ()))
    value = ctx["value"] if ctx.get("has_value") else first.get("input")
    if first["type"] == "missing":
        value = None
    if ctx.get("hide"):
        value = _HIDDEN
    accepted = ctx.get("accepted") or _GENERIC.get(first["type"]) or first["msg"]
    if first["type"] == "missing" and root is not None:
        wanted = _field_accepted(root, loc)
        accepted += f": {wanted}" if wanted else ""
    return ConfigError(key_path(loc) or "config", value, accepted)


def closest(key: str, known: Sequence[str]) -> str:
    match = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    if not match:
        match = [k for k in known if k.lower() == key.lower()]
    return f"; did you mean '{match[0]}'?" if match else ""


# ============================================================== base model


class Section(BaseModel):
    """A mapping in the stack file: unknown keys are refused with a suggestion."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    # Spellings of the cloud-server chart accepted next to ours (chart -> ours).
    chart_aliases: ClassVar[dict[str, str]] = {}

    @classmethod
    def before(cls, data: Mapping[str, Any]) -> Mapping[str, Any]:
        """Section-specific checks that must run before the unknown-key check."""
        return data

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            raise invalid("a mapping (key: value pairs)")
        data = cls.before(data)
        known = [f.alias or name for name, f in cls.model_fields.items()]
        clean: dict[str, Any] = {}
        for key, value in data.items():
            if not isinstance(key, str):
                raise invalid("string keys", sub=(str(key),), value=value)
            ours = cls.chart_aliases.get(key, key)
            if ours not in known:
                raise invalid(
                    "one of the known keys: " + ", ".join(known) + closest(key, known), sub=(key,), value=value
                )
            if ours in clean:
                raise invalid(f"only one of '{ours}' and the chart's '{key}'", sub=(key,), value=value)
            clean[ours] = value
        return clean


def doc(
    description: str,
    accepted: str,
    *,
    default_text: str | None = None,
    example: Any = None,
    secret: bool = False,
    **schema: Any,
) -> dict[str, Any]:
    """Field metadata the reference generator reads (json_schema_extra)."""
    extra: dict[str, Any] = {"x-accepted": accepted, **schema}
    if default_text is not None:
        extra["x-default"] = default_text
    if example is not None:
        extra["examples"] = [example]
    if secret:
        extra["x-secret"] = True
    return {"description": description, "json_schema_extra": extra}


# ============================================================== value checks
# Each takes the raw value and returns the clean one, or raises invalid().


def _string(
    accepted: str = "a string", check: Callable[[str], bool] | None = None, *, strip: bool = False, hide: bool = False
) -> Callable[[Any], str]:
    def validate(value: Any) -> str:
        if not isinstance(value, str):
            raise invalid("a string" if accepted == "a string" else f"a string: {accepted}", hide=hide)
        text = value.strip() if strip else value
        if check is not None and not check(text):
            raise invalid(accepted, hide=hide)
        return text

    return validate


def _pattern(regex: str, accepted: str, *, strip: bool = False) -> Callable[[Any], str]:
    compiled = re.compile(regex)
    return _string(accepted, lambda s: bool(compiled.fullmatch(s)), strip=strip)


def integer(lo: int, hi: int) -> Callable[[Any], int]:
    """A whole number in [lo, hi]; 22.0 (the engine's numbers) and "22" count, True does not."""
    accepted = f"an integer from {lo} to {hi}"

    def validate(value: Any) -> int:
        if isinstance(value, bool):
            raise invalid(accepted)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if not isinstance(value, int) or not lo <= value <= hi:
            raise invalid(accepted)
        return value

    return validate


def boolean(value: Any) -> bool:
    """true/false, also as the strings `pulumi config set` writes."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise invalid("true or false")


def quantity(*, storage: bool = False, accepted: str = "") -> Callable[[Any], str]:
    accepted = accepted or (
        "a Kubernetes quantity such as 2Gi, 500Mi or 1Ti (at least 1Mi for volumes)"
        if storage
        else "a Kubernetes quantity such as 250m, 2, 512Mi or 2Gi"
    )

    def validate(value: Any) -> str:
        if isinstance(value, float) and value.is_integer():
            value = str(int(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise invalid(accepted)
        try:
            amount = quantity_value(value)
        except ValueError:
            raise invalid(accepted) from None
        if amount <= 0 or (storage and amount < 2**20):
            raise invalid(accepted)
        return value

    return validate


def duration(*, at_most: timedelta | None = None, positive: bool = False) -> Callable[[Any], timedelta]:
    accepted = DURATION_ACCEPTED + (", greater than 0" if positive else "")
    if at_most is not None:
        accepted += f", at most {_human(at_most)}"

    def validate(value: Any) -> timedelta:
        try:
            amount = parse_duration(value)
        except ValueError:
            hint = (
                " (a bare number has no unit)" if isinstance(value, int | float) and not isinstance(value, bool) else ""
            )
            raise invalid(accepted + hint) from None
        if (positive and amount <= timedelta(0)) or (at_most is not None and amount > at_most):
            raise invalid(accepted)
        return amount

    return validate


def _human(delta: timedelta) -> str:
    days = delta.days
    return f"{days // 7} weeks" if days % 7 == 0 and days >= 14 else f"{days} days"


def string_map(
    key_check: Callable[[str], bool] | None = None,
    key_accepted: str = "",
    value_check: Callable[[str], bool] | None = None,
    value_accepted: str = "",
) -> Callable[[Any], dict]:
    def validate(value: Any) -> dict[str, str]:
        if not isinstance(value, Mapping):
            raise invalid("a mapping (key: value pairs)")
        out: dict[str, str] = {}
        for k, v in value.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise invalid("string keys with string values (quote numbers)", sub=(str(k),), value=v)
            if key_check is not None and not key_check(k):
                raise invalid(key_accepted, sub=(k,), value=k)
            if value_check is not None and not value_check(v):
                raise invalid(value_accepted, sub=(k,), value=v)
            out[k] = v
        return out

    return validate


def string_list(item: Callable[[Any], str], *, non_empty: str = "") -> Callable[[Any], tuple[str, ...]]:
    def validate(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise invalid("a list")
        if non_empty and not value:
            raise invalid(non_empty)
        out = []
        for index, entry in enumerate(value):
            try:
                out.append(item(entry))
            except PydanticCustomError as err:
                raise invalid(
                    str(err.context["accepted"] if err.context else err.message()), sub=(index,), value=entry
                ) from None
        return tuple(out)

    return validate


def _is_unix_name(text: str) -> bool:
    return bool(USERNAME_RE.fullmatch(text)) and text not in RESERVED_USERNAMES


def _dns_label(max_len: int = 63) -> Callable[[Any], str]:
    return _string(
        f"a DNS label: lowercase letters, digits and '-', starting and ending with a letter or digit, "
        f"at most {max_len} characters",
        lambda s: len(s) <= max_len and bool(DNS_LABEL.fullmatch(s)),
    )


_STORAGE_CLASS = _string(
    "a StorageClass name (DNS subdomain) or ''", lambda s: not s or bool(DNS_SUBDOMAIN.fullmatch(s))
)

_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)


def is_authorized_key(text: str) -> bool:
    """One OpenSSH public key line whose blob really is a key of the type it names.

    Security-key types (sk-*) are allowed for the instructor's own login even
    though `cryptography` cannot load them (they are never signed here): for
    them the blob's embedded type name must match.
    """
    parts = text.split()
    if "\n" in text or len(parts) < 2 or parts[0] not in _KEY_TYPES:
        return False
    if not parts[0].startswith("sk-"):
        try:
            normalize_public_key(text)
        except ValueError:
            return False
        return True
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError:
        return False
    size = int.from_bytes(blob[:4], "big")
    return blob[4 : 4 + size] == parts[0].encode()


def _script(value: Any) -> str:
    if not isinstance(value, str):
        raise invalid("a string")
    if value and not value.startswith("#!"):
        raise invalid("a script starting with '#!' or ''")
    return value


# ============================================================== login server sections

# Mounting over (or under) these would hide or replace parts of the OS image,
# or let a volume shadow the root-owned SSH configuration the access model
# depends on. /home itself is the home volume.
SYSTEM_DIRS = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/sys",
    "/tmp",
    "/usr",
    "/var",
)
# Exceptions under the system directories: a web root is the classic reason
# for an extra port (the chart's own extraPorts example is http/https).
ALLOWED_UNDER_SYSTEM = ("/var/www",)
# Mounting *under* these is fine as long as the path is not the directory itself.
NOT_ITSELF = ("/home", "/", "/srv", "/opt", "/mnt", "/media")
MOUNT_PATH_ACCEPTED = (
    "an absolute path outside the system directories ("
    + ", ".join(SYSTEM_DIRS)
    + ") and not /home itself, e.g. /home/cis90, /srv/data or /var/www"
)


def _mount_path(value: Any) -> str:
    if not isinstance(value, str):
        raise invalid("a string")
    if not value.startswith("/") or ".." in value.split("/") or "\n" in value or ":" in value:
        raise invalid(MOUNT_PATH_ACCEPTED)
    path = posixpath.normpath(value)
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    if path in NOT_ITSELF:
        raise invalid(MOUNT_PATH_ACCEPTED)
    if any(path == ok or path.startswith(ok + "/") for ok in ALLOWED_UNDER_SYSTEM):
        return path
    if any(path == system or path.startswith(system + "/") for system in SYSTEM_DIRS):
        raise invalid(MOUNT_PATH_ACCEPTED)
    return path


def _mount_name(value: Any) -> str:
    name = _dns_label(40)(value)
    if name == "home":
        raise invalid("any name except 'home' (the home volume uses it)")
    return name


class MountModel(Section):
    """One extra persistent volume."""

    chart_aliases: ClassVar[dict[str, str]] = {"className": "storageClassName"}

    name: Annotated[str, BeforeValidator(_mount_name)] = Field(
        **doc(
            "Names the claim (`extra-<name>`); a rename is a new volume.",
            "a DNS label of at most 40 characters",
            example="cis90",
        )
    )
    path: Annotated[str, BeforeValidator(_mount_path)] = Field(
        **doc("Where it is mounted in the login container.", MOUNT_PATH_ACCEPTED, example="/home/cis90")
    )
    size: Annotated[str, BeforeValidator(quantity(storage=True))] = Field(
        **doc(
            "Requested size; growing it expands the claim in place.",
            "a Kubernetes quantity, at least 1Mi",
            example="20Gi",
            pattern=QUANTITY_PATTERN,
        )
    )
    storageClassName: Annotated[str, BeforeValidator(_STORAGE_CLASS)] = Field(
        "",
        **doc(
            "StorageClass of the claim; '' = the Retain class this stack creates. The chart's spelling "
            "`className` is accepted.",
            "a StorageClass name or ''",
        ),
    )


_PORT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?\Z")


def _port_name(value: Any) -> str:
    accepted = "an IANA service name: at most 15 lowercase letters, digits and '-', with at least one letter"
    name = _string(accepted, lambda s: bool(_PORT_NAME.fullmatch(s)) and bool(re.search("[a-z]", s)) and "--" not in s)(
        value
    )
    if name == "ssh":
        raise invalid("any name except 'ssh' (used by the SSH port)")
    return name


def _protocol(value: Any) -> str:
    if not isinstance(value, str):
        raise invalid("a string")
    if value.upper() not in ("TCP", "UDP", "SCTP"):
        raise invalid("TCP, UDP or SCTP")
    return value.upper()


class PortModel(Section):
    """One extra port on the SSH Service."""

    chart_aliases: ClassVar[dict[str, str]] = {"proto": "protocol"}

    name: Annotated[str, BeforeValidator(_port_name)] = Field(
        **doc(
            "Port name on the Service and the container.",
            "an IANA service name (at most 15 characters)",
            example="http",
        )
    )
    port: Annotated[int, BeforeValidator(integer(1, 65535))] = Field(
        **doc(
            "Port number, the same on the Service and the container.",
            "an integer from 1 to 65535",
            example=80,
            minimum=1,
            maximum=65535,
        )
    )
    protocol: Annotated[str, BeforeValidator(_protocol)] = Field(
        "TCP",
        **doc(
            "TCP, UDP or SCTP; the chart's spelling `proto` is accepted.",
            "TCP, UDP or SCTP",
            enum=["TCP", "UDP", "SCTP"],
        ),
    )


class ImageModel(Section):
    """The login image."""

    repository: Annotated[
        str,
        BeforeValidator(_pattern(r"^[a-z0-9]+([._/:-][a-z0-9]+)*\Z", "an image repository such as ghcr.io/owner/name")),
    ] = Field("ghcr.io/mike-matera/cloud-native-server", **doc("Image repository.", "an image repository"))
    tag: Annotated[str, BeforeValidator(lambda v: _image_tag(v))] = Field(
        "jammy-2022070801", **doc("Image tag; may carry `@sha256:…`.", "an image tag")
    )
    pullPolicy: Annotated[
        str,
        BeforeValidator(_string("Always, IfNotPresent or Never", lambda s: s in ("Always", "IfNotPresent", "Never"))),
    ] = Field(
        "IfNotPresent",
        **doc("Kubernetes imagePullPolicy.", "Always, IfNotPresent or Never", enum=["Always", "IfNotPresent", "Never"]),
    )
    pullSecrets: Annotated[tuple[str, ...], BeforeValidator(string_list(_dns_label(253)))] = Field(
        (), **doc("Names of image pull Secrets in the namespace.", "a list of Secret names")
    )


def _image_tag(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(int(value)) if float(value).is_integer() else str(value)
    return _pattern(
        r"^([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}(@sha256:[0-9a-f]{64})?|@sha256:[0-9a-f]{64})\Z",
        "an image tag (letters, digits, '_', '.', '-')",
    )(value)


_RESOURCE_NAMES = ("cpu", "memory", "ephemeral-storage")


def _resource_amounts(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise invalid("a mapping (key: value pairs)")
    out: dict[str, str] = {}
    for name, amount in value.items():
        if name not in _RESOURCE_NAMES:
            raise invalid(
                "one of the known keys: " + ", ".join(_RESOURCE_NAMES) + closest(str(name), _RESOURCE_NAMES),
                sub=(str(name),),
                value=amount,
            )
        try:
            out[name] = quantity()(amount)
        except PydanticCustomError as err:
            raise invalid(str((err.context or {})["accepted"]), sub=(name,), value=amount) from None
    return out


class ResourcesModel(Section):
    """Requests and limits of one container; a side given alone is mirrored to the other."""

    requests: Annotated[dict[str, str], BeforeValidator(_resource_amounts)] = Field(
        default_factory=dict, **doc("cpu / memory / ephemeral-storage requests.", "Kubernetes quantities")
    )
    limits: Annotated[dict[str, str], BeforeValidator(_resource_amounts)] = Field(
        default_factory=dict, **doc("cpu / memory / ephemeral-storage limits.", "Kubernetes quantities")
    )

    @model_validator(mode="after")
    def _request_within_limit(self) -> ResourcesModel:
        for name, request in self.requests.items():
            limit = self.limits.get(name)
            if limit is not None and quantity_value(request) > quantity_value(limit):
                raise invalid(f"at most the limit ({limit})", sub=("requests", name), value=request)
        return self


def _ip_address(value: Any) -> str:
    if not isinstance(value, str):
        raise invalid("a string")
    if value:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise invalid("an IPv4 or IPv6 address such as 172.20.2.100") from None
    return value


_ANNOTATIONS = string_map(is_qualified_name, QUALIFIED_NAME_ACCEPTED)


class ServiceModel(Section):
    """The SSH Service; extra ports ride on it."""

    type: Annotated[
        str,
        BeforeValidator(
            _string("LoadBalancer, NodePort or ClusterIP", lambda s: s in ("LoadBalancer", "NodePort", "ClusterIP"))
        ),
    ] = Field(
        "LoadBalancer",
        **doc("Service type.", "LoadBalancer, NodePort or ClusterIP", enum=["LoadBalancer", "NodePort", "ClusterIP"]),
    )
    loadBalancerIP: Annotated[str, BeforeValidator(_ip_address)] = Field(
        "", **doc("Requested address (LoadBalancer only).", "an IPv4 or IPv6 address, or ''", example="172.20.2.100")
    )
    annotations: Annotated[dict[str, str], BeforeValidator(_ANNOTATIONS)] = Field(
        default_factory=dict,
        **doc(
            "Service annotations (e.g. for MetalLB or a cloud load balancer).",
            "a mapping of Kubernetes annotation keys to strings",
        ),
    )
    port: Annotated[int, BeforeValidator(integer(1, 65535))] = Field(
        22, **doc("SSH port on the Service.", "an integer from 1 to 65535", minimum=1, maximum=65535)
    )
    nodePort: Annotated[int | None, BeforeValidator(lambda v: None if v is None else integer(30000, 32767)(v))] = Field(
        None,
        **doc(
            "Fixed node port (NodePort or LoadBalancer).",
            "an integer from 30000 to 32767",
            default_text="assigned by Kubernetes",
            minimum=30000,
            maximum=32767,
        ),
    )

    @model_validator(mode="after")
    def _type_rules(self) -> ServiceModel:
        if self.loadBalancerIP and self.type != "LoadBalancer":
            raise invalid(
                "empty unless service.type is LoadBalancer", sub=("loadBalancerIP",), value=self.loadBalancerIP
            )
        if self.nodePort is not None and self.type == "ClusterIP":
            raise invalid(
                "unset unless service.type is NodePort or LoadBalancer", sub=("nodePort",), value=self.nodePort
            )
        return self


class SshModel(Section):
    """The class CA."""

    existingSecret: Annotated[
        str,
        BeforeValidator(
            _string(
                "a Secret name (DNS label) or ''", lambda s: not s or (len(s) <= 253 and bool(DNS_LABEL.fullmatch(s)))
            )
        ),
    ] = Field(
        "",
        **doc(
            "Use this Secret's CA (keys `ca_key` and `ca_key_pub`, or the chart's `ca_key.pub`) instead of "
            "generating one.",
            "a Secret name or ''",
            example="class-ca",
        ),
    )
    caAlgorithm: Annotated[str, BeforeValidator(lambda v: _ca_algorithm(v))] = Field(
        "ed25519",
        **doc("Algorithm of a generated CA: ed25519, or rsa for RSA 4096.", "ed25519 or rsa", enum=["ed25519", "rsa"]),
    )
    knownHostsPatterns: Annotated[
        tuple[str, ...],
        BeforeValidator(
            string_list(
                _pattern(r"^!?[A-Za-z0-9*?.\[\]:_-]+\Z", "a known_hosts host pattern such as *.example.edu"),
                non_empty="at least one host pattern, e.g. '*' or '*.example.edu'",
            )
        ),
    ] = Field(("*",), **doc("Host patterns of the `@cert-authority` line.", "a non-empty list of host patterns"))
    hostPrincipals: Annotated[
        tuple[str, ...], BeforeValidator(string_list(_pattern(r"^[A-Za-z0-9.:_-]+\Z", "a host name or IP address")))
    ] = Field((), **doc("Extra names in the host certificate.", "a list of host names or IP addresses"))

    @classmethod
    def before(cls, data: Mapping[str, Any]) -> Mapping[str, Any]:
        # The chart's ssh.ca_key/ca_key_pub carry a private key in values;
        # here the CA is generated (key in Pulumi state) or an existing Secret.
        if "ca_key" in data or "ca_key_pub" in data:
            raise invalid(
                "ssh.existingSecret naming a Secret with keys ca_key and ca_key_pub (or ca_key.pub), or "
                "nothing (the stack generates its CA); private keys do not belong in stack files",
                sub=("ca_key",),
                value=_HIDDEN,
                hide=True,
            )
        return data

    @model_validator(mode="after")
    def _algorithm_or_secret(self) -> SshModel:
        if self.existingSecret and "caAlgorithm" in self.model_fields_set:
            raise invalid("unset when ssh.existingSecret is given", sub=("caAlgorithm",), value=self.caAlgorithm)
        return self


def _ca_algorithm(value: Any) -> str:
    if not isinstance(value, str):
        raise invalid("a string")
    if value.lower() not in ("ed25519", "rsa"):
        raise invalid("ed25519 or rsa")
    return value.lower()


def _kubernetes(definition: str, *, many: bool) -> Callable[[Any], Any]:
    """Check a value against the Kubernetes OpenAPI definition (components/k8sschema.py)."""

    def validate(value: Any) -> Any:
        if many and not isinstance(value, list):
            raise invalid("a list")
        if not many and not isinstance(value, Mapping):
            raise invalid("a mapping (key: value pairs)")
        items = list(enumerate(value)) if many else [(None, value)]
        for index, item in items:
            prefix: tuple[str | int, ...] = () if index is None else (index,)
            if not isinstance(item, Mapping):  # the schema allows null; a pod spec entry cannot be one
                raise invalid(f"a mapping (a Kubernetes {definition.rsplit('.', 1)[-1]})", sub=prefix, value=item)
            found = k8sschema.first_error(definition, item, "")
            if found:
                path, bad, accepted = found
                sub = prefix + tuple(_split_path(path))
                if not sub:
                    raise invalid(accepted)
                raise invalid(accepted, sub=sub, value=bad)
        return tuple(dict(v) for v in value) if many else dict(value)

    return validate


def _split_path(path: str) -> list[str | int]:
    parts: list[str | int] = []
    for name, index in re.findall(r"\.([^.\[]+)|\[(\d+)\]", path):
        parts.append(int(index) if index else name)
    return parts


def _tolerations(value: Any) -> tuple[dict[str, Any], ...]:
    result = _kubernetes("io.k8s.api.core.v1.Toleration", many=True)(value)
    # The OpenAPI definition types these as strings; the API server checks the words.
    for index, entry in enumerate(result):
        operator = entry.get("operator", "Equal")
        if operator not in ("Equal", "Exists"):
            raise invalid("Equal or Exists", sub=(index, "operator"), value=operator)
        effect = entry.get("effect", "")
        if effect not in ("", "NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise invalid("NoSchedule, PreferNoSchedule or NoExecute", sub=(index, "effect"), value=effect)
        if entry.get("key") and not is_qualified_name(entry["key"]):
            raise invalid(QUALIFIED_NAME_ACCEPTED, sub=(index, "key"), value=entry["key"])
        if operator == "Exists" and entry.get("value"):
            raise invalid("no value with operator Exists", sub=(index, "value"), value=entry["value"])
        if not entry.get("key") and operator != "Exists":
            raise invalid("a key, unless operator is Exists", sub=(index, "key"), value=entry.get("key"))
        if "tolerationSeconds" in entry:
            try:
                entry["tolerationSeconds"] = integer(0, 2**31 - 1)(entry["tolerationSeconds"])
            except PydanticCustomError:
                raise invalid(
                    f"an integer from 0 to {2**31 - 1}",
                    sub=(index, "tolerationSeconds"),
                    value=entry["tolerationSeconds"],
                ) from None
    return result


def _k8s_int(value: Any) -> Any:
    """The engine hands numbers over as floats (22.0): make whole ones integers for the schema check."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _k8s_int(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_k8s_int(v) for v in value]
    return value


_LABEL_SELECTOR_OPS = ("In", "NotIn", "Exists", "DoesNotExist")
_NODE_SELECTOR_OPS = (*_LABEL_SELECTOR_OPS, "Gt", "Lt")


def _affinity(value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        unknown = [k for k in value if k not in ("nodeAffinity", "podAffinity", "podAntiAffinity")]
        if unknown:
            known = ("nodeAffinity", "podAffinity", "podAntiAffinity")
            raise invalid(
                "one of the known keys: " + ", ".join(known) + closest(str(unknown[0]), known),
                sub=(str(unknown[0]),),
                value=value[unknown[0]],
            )
    result: dict[str, Any] = _kubernetes("io.k8s.api.core.v1.Affinity", many=False)(_k8s_int(value))
    # Operators and keys are strings in the schema; the API server checks them.
    for path, node in _walk(result, ()):
        if isinstance(node, Mapping) and "operator" in node and "key" in node:
            ops = _NODE_SELECTOR_OPS if "nodeAffinity" in path else _LABEL_SELECTOR_OPS
            if node["operator"] not in ops:
                raise invalid(", ".join(ops), sub=(*path, "operator"), value=node["operator"])
            if not (isinstance(node["key"], str) and is_qualified_name(node["key"])) and "matchFields" not in path:
                raise invalid(QUALIFIED_NAME_ACCEPTED, sub=(*path, "key"), value=node["key"])
        if isinstance(node, Mapping) and "topologyKey" in node and not is_qualified_name(str(node["topologyKey"])):
            raise invalid(QUALIFIED_NAME_ACCEPTED, sub=(*path, "topologyKey"), value=node["topologyKey"])
        if (
            isinstance(node, Mapping)
            and "weight" in node
            and not (isinstance(node["weight"], int) and 1 <= node["weight"] <= 100)
        ):
            raise invalid("an integer from 1 to 100", sub=(*path, "weight"), value=node["weight"])
    return result


def _walk(node: Any, path: tuple[str | int, ...]) -> list[tuple[tuple[str | int, ...], Any]]:
    found = [(path, node)]
    if isinstance(node, Mapping):
        for k, v in node.items():
            found += _walk(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _walk(v, (*path, i))
    return found


def _mounts(value: Any) -> Any:
    if not isinstance(value, list):
        raise invalid("a list")
    return value


def _distinct_mounts(mounts: tuple[MountModel, ...]) -> None:
    names: dict[str, int] = {}
    paths: dict[str, int] = {}
    for index, mount in enumerate(mounts):
        if mount.name in names:
            raise invalid(
                f"a name not already used by extraMounts[{names[mount.name]}]",
                sub=("extraMounts", index, "name"),
                value=mount.name,
            )
        if mount.path in paths:
            raise invalid(
                f"a path not already mounted by extraMounts[{paths[mount.path]}]",
                sub=("extraMounts", index, "path"),
                value=mount.path,
            )
        for other, other_index in paths.items():
            if mount.path.startswith(other + "/") or other.startswith(mount.path + "/"):
                raise invalid(
                    f"a path that does not nest with extraMounts[{other_index}] ({other}): one volume "
                    "would hide the other",
                    sub=("extraMounts", index, "path"),
                    value=mount.path,
                )
        names[mount.name] = index
        paths[mount.path] = index


def _distinct_ports(ports: tuple[PortModel, ...], ssh_port: int) -> None:
    names: dict[str, int] = {}
    numbers: dict[tuple[int, str], int] = {}
    for index, port in enumerate(ports):
        if port.port in (22, ssh_port) and port.protocol == "TCP":
            raise invalid("a port other than the SSH port (22/TCP)", sub=("extraPorts", index, "port"), value=port.port)
        if port.name in names:
            raise invalid(
                f"a name not already used by extraPorts[{names[port.name]}]",
                sub=("extraPorts", index, "name"),
                value=port.name,
            )
        if (port.port, port.protocol) in numbers:
            raise invalid(
                f"a port not already exposed by extraPorts[{numbers[(port.port, port.protocol)]}]",
                sub=("extraPorts", index, "port"),
                value=port.port,
            )
        names[port.name] = index
        numbers[(port.port, port.protocol)] = index


# ============================================================== roster, term, revocations


def _optional_text(value: Any) -> Any:
    """Roster values are judged by rosterdata's person rules (shared with CSV rows); here only the type."""
    if isinstance(value, bool) or (value is not None and not isinstance(value, str | int | float)):
        raise invalid("a string")
    return value


def _keys_value(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(k, str) for k in value):
        return value
    raise invalid("a public key string or a list of them")


class PersonModel(Section):
    """One roster entry. The rules for each value are rosterdata's (shared with CSV rows)."""

    username: Annotated[str, BeforeValidator(_string(USERNAME_ACCEPTED))] = Field(
        **doc("Unix account name and certificate principal.", USERNAME_ACCEPTED, example="alice")
    )
    uid: Annotated[int | str | None, BeforeValidator(_optional_text)] = Field(
        None,
        **doc(
            "Unix UID (1000–65533); derived from the username into 20000–59999 when absent.",
            "an integer from 1000 to 65533",
            default_text="derived",
        ),
    )
    name: Annotated[str | None, BeforeValidator(_optional_text)] = Field(
        None, **doc("Full name (GECOS).", "a name without ':' or line breaks")
    )
    email: Annotated[str | None, BeforeValidator(_optional_text)] = Field(
        None, **doc("E-mail address (kept out of the pod).", "an e-mail address")
    )
    keys: Annotated[str | list[str] | None, BeforeValidator(_keys_value)] = Field(
        None, **doc("Public keys that get certificates.", KEY_ACCEPTED)
    )
    key: Annotated[str | list[str] | None, BeforeValidator(_keys_value)] = Field(
        None, **doc("One public key (same as `keys`).", KEY_ACCEPTED)
    )
    github: Annotated[str | None, BeforeValidator(_optional_text)] = Field(
        None, **doc("GitHub handle for ssh-import-id.", "a GitHub handle")
    )
    launchpad: Annotated[str | None, BeforeValidator(_optional_text)] = Field(
        None, **doc("Launchpad id for ssh-import-id.", "a Launchpad id")
    )
    role: Annotated[str | None, BeforeValidator(_optional_text)] = Field(
        None,
        **doc(
            "student, ta or instructor; staff get sudo.", " | ".join(ROLES), default_text="student", enum=list(ROLES)
        ),
    )
    labs: Annotated[bool | str | None, BeforeValidator(lambda v: v)] = Field(
        None, **doc("Whether this person gets a lab cluster.", "true or false", default_text="false")
    )


def _person_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "~name"
    if isinstance(value, Mapping):
        return "~person"
    return None


PersonItem = Annotated[
    Annotated[str, Tag("~name")] | Annotated[PersonModel, Tag("~person")],
    Discriminator(
        _person_kind,
        custom_error_type="classroom",
        custom_error_message="a mapping {username, keys, role, ...} or a username",
    ),
]


class RosterDefaults(Section):
    role: Annotated[str | None, BeforeValidator(_optional_text)] = Field(
        None, **doc("Role of every row without one.", " | ".join(ROLES))
    )
    labs: Annotated[bool | str | None, BeforeValidator(lambda v: v)] = Field(
        None, **doc("labs of every row without one.", "true or false")
    )


class RosterCsvModel(Section):
    """A registrar/LMS export."""

    csv: Annotated[str, BeforeValidator(_string("a path to a CSV file", bool))] = Field(
        **doc("Path relative to the project or to stacks/.", "a path to a CSV file", example="students.csv")
    )
    defaults: RosterDefaults | None = Field(
        None, **doc("Values for rows that have none.", "a mapping with 'role' and/or 'labs'")
    )
    staff: dict[str, Literal["ta", "instructor"]] | None = Field(
        None,
        **doc(
            "The export's rows that are staff (passwordless sudo), by username: the stack file, reviewed in a "
            "pull request, is the only place that can make someone staff; a staff role in the CSV itself is refused.",
            "a mapping username: ta | instructor",
            example={"jlopez": "ta"},
        ),
    )


def _roster_kind(value: Any) -> str | None:
    if isinstance(value, list):
        return "~list"
    if isinstance(value, Mapping):
        return "~csv"
    return None


Roster = Annotated[
    Annotated[list[PersonItem], Tag("~list")] | Annotated[RosterCsvModel, Tag("~csv")],
    Discriminator(
        _roster_kind,
        custom_error_type="classroom",
        custom_error_message="a list of people or {csv: path/to/export.csv}",
    ),
]

EARLIEST_TERM = date(2000, 1, 1)
LATEST_TERM = date(2099, 12, 31)
MAX_TERM_LENGTH = timedelta(days=400)
MAX_GRACE = timedelta(days=180)
MAX_PAST = timedelta(days=10 * 365)
_DATE_ACCEPTED = f"a date YYYY-MM-DD or an ISO 8601 date-time between {EARLIEST_TERM} and {LATEST_TERM}"


def _instant(value: Any) -> date | datetime:
    if isinstance(value, datetime | date):
        moment = value
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
                moment = date.fromisoformat(text)
            else:
                moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise invalid(_DATE_ACCEPTED) from None
    else:
        raise invalid(_DATE_ACCEPTED)
    day = moment.date() if isinstance(moment, datetime) else moment
    # Far from the calendar's edges: no overflow when a day or a time zone is added.
    if not EARLIEST_TERM <= day <= LATEST_TERM:
        raise invalid(_DATE_ACCEPTED)
    return moment


def _timezone(value: Any) -> str:
    accepted = "an IANA time zone like 'America/Los_Angeles' or 'UTC'"
    if not isinstance(value, str) or not value.strip():
        raise invalid(accepted)
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise invalid(accepted) from None
    return value


def _moment(value: date | datetime, tz: ZoneInfo, *, end_of_day: bool) -> datetime:
    if isinstance(value, datetime):
        moment = value
    else:
        moment = datetime.combine(value + timedelta(days=1) if end_of_day else value, time(0))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment.astimezone(UTC)


class TermModel(Section):
    """The access window."""

    start: Annotated[date | datetime, BeforeValidator(_instant)] = Field(
        **doc(
            "First day of access (from 00:00 in `timezone`), or an exact ISO 8601 date-time.",
            _DATE_ACCEPTED,
            example="2026-08-24",
        )
    )
    end: Annotated[date | datetime, BeforeValidator(_instant)] = Field(
        **doc("Last day of access (to its end in `timezone`).", _DATE_ACCEPTED, example="2026-12-18")
    )
    timezone: Annotated[str, BeforeValidator(_timezone)] = Field(
        "UTC", **doc("IANA time zone of the dates.", "an IANA time zone", example="America/Los_Angeles")
    )
    grace: Annotated[timedelta, BeforeValidator(duration(at_most=MAX_GRACE))] = Field(
        timedelta(0),
        **doc("Extra access after `end`.", DURATION_ACCEPTED, default_text="0", example="7d", pattern=DURATION_PATTERN),
    )
    name: Annotated[
        str, BeforeValidator(_pattern(r"^[A-Za-z0-9._-]{1,40}\Z", "letters, digits, '.', '_' or '-' (e.g. fall2026)"))
    ] = Field(
        "",
        **doc(
            "Term name in certificate key ids.",
            "letters, digits, '.', '_' or '-'",
            default_text="the stack name after its last '-'",
        ),
    )

    def window(self) -> tuple[datetime, datetime]:
        tz = ZoneInfo(self.timezone)
        return _moment(self.start, tz, end_of_day=False), _moment(self.end, tz, end_of_day=True)

    @model_validator(mode="after")
    def _sane_window(self) -> TermModel:
        start, end = self.window()
        if end <= start:
            raise invalid(f"a date after term.start ({self.start})", sub=("end",), value=str(self.end))
        if end - start > MAX_TERM_LENGTH:
            raise invalid(
                f"at most {MAX_TERM_LENGTH.days} days after term.start ({self.start})",
                sub=("end",),
                value=str(self.end),
            )
        if start < datetime.now(UTC) - MAX_PAST:
            raise invalid(
                "a start within the last 10 years (a typo in the year?)", sub=("start",), value=str(self.start)
            )
        return self


def _serial(value: Any) -> int:
    accepted = "certificate serial numbers: whole numbers from 1 to 2^64-1 (decimal, or 0x... as a string)"
    if isinstance(value, bool):
        raise invalid(accepted)
    if isinstance(value, float):
        if not value.is_integer():
            raise invalid(accepted)
        value = int(value)
    if isinstance(value, str):
        try:
            value = int(value.strip(), 0)
        except ValueError:
            raise invalid(accepted) from None
    if not isinstance(value, int) or not 0 < value < 1 << 64:
        raise invalid(accepted)
    return value


def _revoked_key(value: Any) -> str:
    if not isinstance(value, str):
        raise invalid("a public key line or a SHA256:... fingerprint")
    text = value.strip()
    if FINGERPRINT_RE.fullmatch(text):
        return text
    try:
        return normalize_public_key(text)
    except ValueError as exc:
        raise invalid(f"a public key line or a SHA256:... fingerprint ({exc})") from None


def _serials(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise invalid("a list")
    out = []
    for index, item in enumerate(value):
        try:
            out.append(_serial(item))
        except PydanticCustomError as err:
            raise invalid(str((err.context or {})["accepted"]), sub=(index,), value=item) from None
    return tuple(out)


class RevocationsModel(Section):
    """Certificates and keys refused at once (a KRL)."""

    serials: Annotated[tuple[int, ...], BeforeValidator(_serials)] = Field(
        (),
        **doc("Certificate serials (see `classroom roster status`).", "a list of whole numbers", example=[123456789]),
    )
    keys: Annotated[tuple[str, ...], BeforeValidator(lambda v: () if v is None else string_list(_revoked_key)(v))] = (
        Field((), **doc("Public keys or SHA256 fingerprints.", "a list of public keys or SHA256:... fingerprints"))
    )


# The access keys, declared once: StackModel has them, and AccessModel is
# what rosterdata.parse_access validates on its own (`classroom roster` and
# `classroom term` call it without the rest of a stack).
RosterField = Annotated[
    Roster | None,
    BeforeValidator(lambda v: v),
    Field(
        None,
        **doc(
            "A list of people (or usernames), or `{csv: students.csv, defaults: {role: student, labs: false}}`.",
            "a list of people or {csv: path}",
            default_text="none",
        ),
    ),
]
TermField = Annotated[
    TermModel | None,
    Field(
        None,
        **doc(
            "The access window: from 00:00 on `start` to the end of `end`, plus `grace`, in `timezone`.",
            "a mapping {start, end, timezone, grace, name}",
            default_text="required with a roster",
            example={"start": "2026-08-24", "end": "2026-12-18", "timezone": "America/Los_Angeles", "grace": "7d"},
        ),
    ),
]
RevocationsField = Annotated[
    RevocationsModel | None,
    Field(
        None,
        **doc(
            "Certificates and keys refused at once, through a KRL that sshd reads as `RevokedKeys`.",
            "a mapping {serials, keys}",
            default_text="none",
            example={"serials": [123456789], "keys": ["SHA256:…"]},
        ),
    ),
]
StaffKeepOwnKeysField = Annotated[
    bool,
    BeforeValidator(boolean),
    Field(
        True,
        **doc(
            "TAs and instructors may also use `~/.ssh/authorized_keys`. Students never can.",
            "true or false",
            example=False,
        ),
    ),
]


_UID_MAP_ACCEPTED = "a mapping of usernames to UIDs (integers from 1000 to 65533), each UID once"


def _uid_map(value: Any) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise invalid(_UID_MAP_ACCEPTED)
    out: dict[str, int] = {}
    holders: dict[int, str] = {}
    for name, raw in value.items():
        if not isinstance(name, str) or not _is_unix_name(name):
            raise invalid(USERNAME_ACCEPTED, sub=(str(name),), value=name)
        # `pulumi config set --path` stores a number as text: accept digits too.
        uid = (
            raw
            if isinstance(raw, int) and not isinstance(raw, bool)
            else int(raw)
            if isinstance(raw, str) and raw.strip().isdigit()
            else None
        )
        if uid is None or not 1000 <= uid <= 65533:
            raise invalid("an integer from 1000 to 65533", sub=(name,), value=raw)
        if uid in holders:
            raise invalid(f"a UID not already given to {holders[uid]}", sub=(name,), value=raw)
        holders[uid] = name
        out[name] = uid
    return out


AdoptedUidsField = Annotated[
    dict[str, int],
    BeforeValidator(_uid_map),
    Field(
        default_factory=dict,
        **doc(
            "UIDs that own kept homes, from the previous term's UID ledger; `classroom term new --adopt-homes` "
            "writes it. The "
            "UID ledger starts from them: a returning person keeps their UID (so their home), nobody else gets one of "
            "them, and an explicit `uid` that contradicts them is refused.",
            _UID_MAP_ACCEPTED,
            default_text="{}",
            example={"alice": 41234, "bob": 27001},
        ),
    ),
]


class AccessModel(Section):
    """The roster, term and revocations keys of a stack."""

    roster: RosterField
    term: TermField
    revocations: RevocationsField
    staffKeepOwnKeys: StaffKeepOwnKeysField
    adoptedUids: AdoptedUidsField


# ============================================================== labs

_LAB_DNS_NAME = re.compile(r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}\Z|^localhost\Z")
_LAB_HOST_NAME = r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?\Z"
_ADDRESS = r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?\Z|^\[?[0-9a-fA-F:]+\]?\Z"
IMAGE_REF = (
    r"^[a-z0-9]+([._/-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9._-]+)*(:[A-Za-z0-9._+-]{1,128})?"
    r"(@sha256:[0-9a-f]{64})?\Z"
)
_PUBKEY = (
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521))(-cert-v01@openssh\.com)? "
    r"[A-Za-z0-9+/]+={0,3}( .*)?\Z"
)
_ABS_PATH = r"^/[A-Za-z0-9._/-]+\Z"
DEFAULT_K3S_IMAGE = "docker.io/rancher/k3s:v1.31.5-k3s1"


def _secret_text(min_len: int = 32) -> Callable[[Any], str]:
    accepted = f"a secret string of at least {min_len} characters (pulumi config set --secret)"

    def validate(value: Any) -> str:
        # Never echo a secret back, even a short one.
        if not isinstance(value, str) or len(value.strip()) < min_len:
            raise invalid(accepted, hide=isinstance(value, str))
        return value.strip()

    return validate


def _weight(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 100:
        raise invalid("a number > 0 and <= 100 (share of students; default 1)")
    return float(value)


def _optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if v is None else check(v)


class LabHostModel(Section):
    """One lab host: an existing machine, or (`inCluster`) a Docker-in-Docker pod the stack runs."""

    name: Annotated[
        str, BeforeValidator(_pattern(_LAB_HOST_NAME, "a short lowercase name like 'lab1' (a-z, 0-9, '-')"))
    ] = Field(**doc("Host name in placement and pins.", "a short lowercase name", example="lab1"))
    address: Annotated[
        str | None,
        BeforeValidator(
            _optional(
                _pattern(_ADDRESS, "the host name or IP address the Pulumi engine reaches the lab host's sshd on")
            )
        ),
    ] = Field(
        None,
        **doc(
            "Where the engine reaches the host's sshd.",
            "a host name or IP address",
            default_text="required; inCluster: `labhost-<name>`",
        ),
    )
    port: Annotated[int, BeforeValidator(integer(1, 65535))] = Field(22, **doc("sshd port.", "an integer 1-65535"))
    user: Annotated[
        str, BeforeValidator(_pattern(USERNAME_RE.pattern, "a Unix user name with root or docker rights"))
    ] = Field("root", **doc("Login user on the host.", "a Unix user name"))
    capacity: Annotated[int, BeforeValidator(integer(1, 1000))] = Field(
        **doc("Hard limit of students on this host.", "an integer from 1 to 1000", example=20)
    )
    inCluster: Annotated[bool, BeforeValidator(boolean)] = Field(
        False,
        **doc(
            "Run the host as a privileged Docker-in-Docker StatefulSet with its own protected volume.", "true or false"
        ),
    )
    hostKey: Annotated[str, BeforeValidator(lambda v: _host_key(v))] = Field(
        "", **doc("Pinned host key or certificate line; '' = verify through the CA.", "'TYPE BASE64' or ''")
    )
    principal: Annotated[
        str, BeforeValidator(_pattern(r"^[A-Za-z0-9.:_-]*\Z", "the host name the host certificate was issued for"))
    ] = Field("", **doc("Name the host certificate must carry.", "a host name", default_text="the address"))
    labdPort: Annotated[int, BeforeValidator(integer(1, 65535))] = Field(8787, **doc("labd's port.", "1-65535"))
    storageSize: Annotated[str, BeforeValidator(quantity(storage=True))] = Field(
        "50Gi", **doc("inCluster: size of the host's volume.", "a Kubernetes quantity")
    )
    storageClassName: Annotated[str, BeforeValidator(_pattern(r"^[a-z0-9.-]*\Z", "a StorageClass name"))] = Field(
        "",
        **doc(
            "inCluster: StorageClass of the host's volume; it must have reclaimPolicy Retain, and '' uses the "
            "Retain class the stack manages (like the homes).",
            "a StorageClass name or ''",
        ),
    )
    image: Annotated[str, BeforeValidator(_string("an image reference"))] = Field(
        "", **doc("inCluster: image with dockerd, sshd, python3, ssh-keygen and k3d.", "an image reference")
    )
    installRoot: Annotated[
        str | None,
        BeforeValidator(
            _optional(
                _pattern(
                    r"^(/[A-Za-z0-9._/-]*)?\Z", "an absolute directory (tests only) or empty for the real file system"
                )
            )
        ),
    ] = Field(
        None,
        **doc(
            "Install under this directory (tests).", "an absolute directory or ''", default_text="'' (inCluster: /data)"
        ),
    )
    serviceManager: Annotated[
        str | None,
        BeforeValidator(
            _optional(
                _pattern(
                    r"^(systemd|none)\Z",
                    "'systemd' or 'none' (plain processes with pid files: containers and test hosts)",
                )
            )
        ),
    ] = Field(
        None,
        **doc(
            "How labd and Traefik run.",
            "systemd or none",
            default_text="systemd (inCluster: none)",
            enum=["systemd", "none"],
        ),
    )
    engine: Annotated[
        str | None,
        BeforeValidator(
            _optional(
                _pattern(
                    r"^(rootless|shared)\Z",
                    "'rootless' (each student's clusters under a rootless dockerd of their own host user) "
                    "or 'shared' (one Docker engine for all: a student's cluster-admin is root on the host)",
                )
            )
        ),
    ] = Field(
        None,
        **doc(
            "The Docker engine students' clusters run under (labd's 'engine').",
            "rootless or shared",
            default_text="rootless (inCluster: required, shared)",
            enum=["rootless", "shared"],
        ),
    )
    k3dBinary: Annotated[str, BeforeValidator(_pattern(_ABS_PATH, "an absolute path"))] = Field(
        "/usr/local/bin/k3d", **doc("k3d on the host.", "an absolute path")
    )
    traefikBinary: Annotated[str, BeforeValidator(_pattern(_ABS_PATH, "an absolute path"))] = Field(
        "/usr/local/bin/traefik", **doc("Traefik on the host.", "an absolute path")
    )
    python: Annotated[
        str, BeforeValidator(_pattern(_ABS_PATH, "the absolute path of python3 (>= 3.11) on the lab host"))
    ] = Field("/usr/bin/python3", **doc("python3 (>= 3.11) on the host.", "an absolute path"))
    weight: Annotated[float, BeforeValidator(_weight)] = Field(
        1.0, **doc("Placement share; changing it moves students (capacity does not).", "a number in (0, 100]")
    )
    cpu: Annotated[str, BeforeValidator(quantity(accepted="a CPU quantity like '4' or '3500m'"))] = Field(
        "4", **doc("inCluster: the pod's CPU limit.", "a CPU quantity")
    )
    memory: Annotated[str, BeforeValidator(quantity(accepted="a memory quantity like '16Gi'"))] = Field(
        "16Gi", **doc("inCluster: the pod's memory limit.", "a memory quantity like '16Gi'")
    )

    @model_validator(mode="after")
    def _kind_rules(self) -> LabHostModel:
        if self.inCluster:
            for forbidden in ("installRoot", "serviceManager"):
                if forbidden in self.model_fields_set:
                    raise invalid(
                        "nothing: an inCluster host keeps everything on its volume under /data and has no systemd",
                        sub=(forbidden,),
                        value=getattr(self, forbidden),
                    )
            if not re.fullmatch(IMAGE_REF, self.image):
                raise invalid(
                    "a lab host image with dockerd, sshd, python3, ssh-keygen and k3d (inCluster hosts only)",
                    sub=("image",),
                    value=self.image or None,
                )
            if self.engine != "shared":
                # Stated, never defaulted: this is the one lab host kind where a student's
                # cluster-admin is root on a machine (containers/labd/SECURITY.md).
                raise invalid(
                    "'shared', stated: an inCluster host runs every student's cluster on its privileged "
                    "pod's one dockerd (the Docker-in-Docker image has no rootlesskit or uidmap), so a "
                    "student's cluster-admin is root on that Kubernetes node; write engine: shared to "
                    "accept that, or use an SSH lab host (rootless by default)",
                    sub=("engine",),
                    value=self.engine,
                )
        else:
            if self.address is None:
                raise invalid(
                    "the host name or IP address the Pulumi engine reaches the lab host's sshd on",
                    sub=("address",),
                    value=None,
                )
            if self.image:
                raise invalid(
                    "a lab host image with dockerd, sshd, python3, ssh-keygen and k3d (inCluster hosts only)",
                    sub=("image",),
                    value=self.image,
                )
        return self


def _host_key(value: Any) -> str:
    if value == "" or value is None:
        return ""
    return " ".join(
        _pattern(_PUBKEY, "an OpenSSH public key or host certificate line 'TYPE BASE64'")(value).split()[:2]
    )


def private_key_problem(text: str, password: str) -> str | None:
    """Why the engine could not log in with this key, or None when it can."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    secret = password.encode() or None
    try:
        if "BEGIN OPENSSH PRIVATE KEY" in text:
            key: Any = serialization.load_ssh_private_key(text.encode(), secret)
        else:
            key = serialization.load_pem_private_key(text.encode(), secret)
    except TypeError:
        return (
            "it is encrypted: set labs.ssh.privateKeyPassword"
            if secret is None
            else "labs.ssh.privateKeyPassword is set but the key is not encrypted"
        )
    except ValueError:
        return "it does not parse (or the password is wrong)"
    except Exception as exc:  # cryptography raises UnsupportedAlgorithm for DSA and others
        if "bcrypt" in str(exc) and secret is not None:
            # An encrypted OpenSSH key: checking it needs the bcrypt module, which the
            # program does not ship; the engine's ssh client decrypts it with the password.
            return None
        return f"its type is not supported ({type(exc).__name__})"
    if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        return f"its type is not supported ({type(key).__name__})"
    return None


class LabSshModel(Section):
    """How the Pulumi engine logs in to lab hosts."""

    privateKey: Annotated[str, BeforeValidator(_string("an OpenSSH or PEM private key", hide=True))] = Field(
        "", **doc("Private key (secret) the engine logs in with.", "an OpenSSH or PEM private key", secret=True)
    )
    privateKeyPassword: Annotated[str, BeforeValidator(_string(hide=True))] = Field(
        "", **doc("Password of an encrypted privateKey.", "a string", secret=True)
    )
    agentSocket: Annotated[
        str, BeforeValidator(_pattern(r"^(/\S*)?\Z", "the absolute path of an ssh-agent socket"))
    ] = Field("", **doc("ssh-agent socket to use instead of a key.", "an absolute path"))

    @model_validator(mode="after")
    def _usable(self) -> LabSshModel:
        accepted = "an OpenSSH or PEM private key of type ed25519, ECDSA or RSA (pulumi config set --secret ... < key)"
        if self.privateKey:
            problem = private_key_problem(self.privateKey, self.privateKeyPassword)
            if problem:
                raise invalid(
                    f"{accepted}; this one is unusable: {problem}", sub=("privateKey",), value=_HIDDEN, hide=True
                )
        elif not self.agentSocket:
            raise invalid(
                "a private key (secret) the engine logs in to the lab hosts with, or labs.ssh.agentSocket",
                sub=("privateKey",),
                value=None,
            )
        return self


class HookModel(Section):
    url: Annotated[str, BeforeValidator(_pattern(r"^https?://[^/\s]+\S*\Z", "an http:// or https:// URL"))] = Field(
        **doc("Endpoint called with an HMAC-signed JSON payload.", "an http(s) URL")
    )
    secret: Annotated[str, BeforeValidator(_secret_text())] = Field(
        **doc("HMAC key (secret).", "at least 32 characters", secret=True)
    )
    timeout: Annotated[timedelta, BeforeValidator(duration(positive=True, at_most=timedelta(minutes=5)))] = Field(
        timedelta(seconds=5), **doc("Per attempt.", DURATION_ACCEPTED, default_text="5s", pattern=DURATION_PATTERN)
    )
    retries: Annotated[int, BeforeValidator(integer(0, 10))] = Field(3, **doc("Attempts after the first.", "0-10"))


class HooksModel(Section):
    init: HookModel | None = Field(None, **doc("Called when a cluster is first created.", "a hook"))
    cleanup: HookModel | None = Field(None, **doc("Called when a cluster is stopped or deleted.", "a hook"))


DEFAULT_K3D_TEMPLATE = """\
apiVersion: k3d.io/v1alpha5
kind: Simple
metadata:
  name: ${cluster}
servers: ${servers}
agents: ${agents}
image: ${k3sImage}
options:
  k3d:
    wait: true
    timeout: 180s
  k3s:
    extraArgs:
      - arg: --tls-san=${host}
        nodeFilters: [server:*]
  runtime:
    labels:
      - label: classroom.lab/user=${username}
        nodeFilters: [server:*, agent:*, loadbalancer]
"""


class LabsModel(Section):
    """Lab hosts, the per-student k3d template and webhooks."""

    domain: Annotated[
        str,
        BeforeValidator(
            _string("a lowercase DNS domain like 'lab.example.edu'", lambda s: bool(_LAB_DNS_NAME.fullmatch(s)))
        ),
    ] = Field(
        **doc(
            "Students get `<user>.<domain>`: HTTP is routed to their cluster's ingress, HTTPS passes through by "
            "SNI untouched, so Let's Encrypt works inside.",
            "a lowercase DNS domain",
            example="lab.example.edu",
        )
    )
    idleTimeout: Annotated[timedelta, BeforeValidator(duration(positive=True, at_most=timedelta(days=7)))] = Field(
        timedelta(minutes=30),
        **doc(
            "The reaper stops a cluster whose owner has had no session for this long.",
            DURATION_ACCEPTED,
            default_text="30m",
            pattern=DURATION_PATTERN,
        ),
    )
    servers: Annotated[int, BeforeValidator(integer(1, 9))] = Field(1, **doc("k3d servers per cluster.", "1-9"))
    agents: Annotated[int, BeforeValidator(integer(0, 9))] = Field(0, **doc("k3d agents per cluster.", "0-9"))
    k3sImage: Annotated[
        str, BeforeValidator(_pattern(IMAGE_REF, "a k3s image reference like 'docker.io/rancher/k3s:v1.31.5-k3s1'"))
    ] = Field(DEFAULT_K3S_IMAGE, **doc("k3s image of every cluster.", "an image reference"))
    k3dConfigTemplate: Annotated[
        str, BeforeValidator(_string("a k3d.io/v1alpha5 Simple config as a YAML string", lambda s: bool(s.strip())))
    ] = Field(
        DEFAULT_K3D_TEMPLATE,
        **doc(
            "A k3d `Simple` config (`k3d.io/v1alpha5`). The stack fills `${servers}`, `${agents}`, `${k3sImage}`; "
            "labd fills `${username}`, `${cluster}`, `${apiPort}`, `${httpPort}`, `${httpsPort}`, `${host}`, "
            "`${domain}`, `${class}`, `${term}`. Write `$$` for a literal `$`.",
            "a k3d Simple config",
            default_text="built in",
        ),
    )
    hosts: Annotated[tuple[LabHostModel, ...], BeforeValidator(lambda v: _non_empty_hosts(v))] = Field(
        **doc("The lab hosts.", "a non-empty list of hosts")
    )
    ssh: LabSshModel = Field(
        **doc(
            "How the engine logs in to the hosts: `privateKey` (secret, with "
            "`privateKeyPassword` if it is encrypted), or `agentSocket`.",
            "a mapping",
        )
    )
    sessionKey: Annotated[str, BeforeValidator(_secret_text())] = Field(
        **doc("The login server signs session requests with it.", "at least 32 characters", secret=True)
    )
    adminKey: Annotated[str, BeforeValidator(_secret_text())] = Field(
        **doc("The stack manages clusters with it.", "at least 32 characters", secret=True)
    )
    pins: Annotated[
        dict[str, str],
        BeforeValidator(
            string_map(value_check=lambda s: bool(re.fullmatch(_LAB_HOST_NAME, s)), value_accepted="a host name")
        ),
    ] = Field(default_factory=dict, **doc("`{user: host}` overrides the placement.", "a mapping of usernames to hosts"))
    hooks: HooksModel = Field(
        default_factory=lambda: HooksModel.model_validate({}), **doc("Webhooks.", "a mapping with init and/or cleanup")
    )
    clusterPrefix: Annotated[
        str, BeforeValidator(_pattern(r"^[a-z][a-z0-9-]{0,11}\Z", "1..12 lowercase letters, digits or '-'"))
    ] = Field("lab-", **doc("Cluster name prefix; fixed for a term.", "1..12 lowercase letters, digits or '-'"))
    portBase: Annotated[int, BeforeValidator(integer(1024, 65000))] = Field(
        20000, **doc("First host port for clusters (three each).", "1024-65000")
    )
    portLimit: Annotated[int, BeforeValidator(integer(1024, 65535))] = Field(
        29999, **doc("Last host port for clusters.", "portBase+3 to 65535")
    )

    @classmethod
    def before(cls, data: Mapping[str, Any]) -> Mapping[str, Any]:
        # An absent `ssh` is judged by its own rules: "privateKey or agentSocket".
        return data if "ssh" in data else {**data, "ssh": {}}

    @model_validator(mode="after")
    def _cross_rules(self) -> LabsModel:
        if self.portLimit < self.portBase + 3:
            raise invalid(f"an integer from {self.portBase + 3} to 65535", sub=("portLimit",), value=self.portLimit)
        seen: set[str] = set()
        for index, host in enumerate(self.hosts):
            if host.name in seen:
                raise invalid("a name no other lab host has", sub=("hosts", index, "name"), value=host.name)
            seen.add(host.name)
        if not self.ssh.privateKey and any(h.inCluster for h in self.hosts):
            raise invalid(
                "a private key: an inCluster lab host authorizes its public key (an agent cannot be used)",
                sub=("ssh", "privateKey"),
                value=None,
            )
        slots = (self.portLimit - self.portBase + 1) // 3
        for index, host in enumerate(self.hosts):
            if host.capacity > slots:
                raise invalid(
                    f"at most {slots}: each cluster needs 3 ports in labs.portBase..labs.portLimit "
                    f"({self.portBase}..{self.portLimit})",
                    sub=("hosts", index, "capacity"),
                    value=host.capacity,
                )
        problem = template_problem(self.k3dConfigTemplate, self.servers, self.agents, self.k3sImage)
        if problem:
            sub, value, accepted = problem
            raise invalid(accepted, sub=("k3dConfigTemplate", *sub), value=value)
        return self


def _non_empty_hosts(value: Any) -> Any:
    if not isinstance(value, list) or not value:
        raise invalid("a non-empty list of hosts ({name, address, capacity, ...})")
    return value


# Placeholders resolved when the stack is deployed (same for every student).
STACK_PLACEHOLDERS = ("servers", "agents", "k3sImage")
# Placeholders labd resolves per student: the stack file's names -> labd's.
STUDENT_PLACEHOLDERS = {
    "username": "user",
    "cluster": "cluster",
    "apiPort": "api_port",
    "httpPort": "http_port",
    "httpsPort": "https_port",
    "host": "host",
    "domain": "lab_domain",
    "class": "class",
    "term": "term",
}
PLACEHOLDERS = STACK_PLACEHOLDERS + tuple(STUDENT_PLACEHOLDERS)


def template_identifiers(text: str) -> list[str]:
    """Placeholders used in a template, or ValueError for a malformed `$`."""
    names: list[str] = []
    for match in string.Template.pattern.finditer(text):
        if match.group("invalid") is not None:
            line = text[: match.start()].count("\n") + 1
            raise ValueError(f"a '$' on line {line} that starts no placeholder (write '$$' for a literal '$')")
        name = match.group("named") or match.group("braced")
        if name:
            names.append(name)
    return names


def render_stack_template(text: str, servers: int, agents: int, k3s_image: str) -> dict[str, Any]:
    """Resolve the stack placeholders; rename the student ones to labd's names."""
    values: dict[str, str] = {"servers": str(servers), "agents": str(agents), "k3sImage": k3s_image}
    values.update({ours: "${" + theirs + "}" for ours, theirs in STUDENT_PLACEHOLDERS.items()})
    rendered = string.Template(text).substitute(values)
    data = yaml.safe_load(rendered)
    if not isinstance(data, dict):
        raise ValueError("the template is not a YAML mapping")
    return data


def template_problem(text: str, servers: int, agents: int, k3s_image: str) -> tuple[tuple[str, ...], Any, str] | None:
    accepted = "placeholders among " + ", ".join("${" + p + "}" for p in PLACEHOLDERS) + " ('$$' for a literal '$')"
    try:
        used = template_identifiers(text)
    except ValueError as err:
        return (), str(err), accepted
    unknown = sorted(set(used) - set(PLACEHOLDERS))
    if unknown:
        return (), "${" + unknown[0] + "}", accepted
    try:
        data = render_stack_template(text, servers, agents, k3s_image)
    except yaml.YAMLError as err:
        return (), str(err).splitlines()[0], "valid YAML once placeholders are filled in"
    except ValueError as err:
        return (), str(err), "a k3d.io/v1alpha5 Simple config (a YAML mapping)"
    if data.get("apiVersion", "k3d.io/v1alpha5") != "k3d.io/v1alpha5":
        return ("apiVersion",), data.get("apiVersion"), "'k3d.io/v1alpha5'"
    if data.get("kind", "Simple") != "Simple":
        return ("kind",), data.get("kind"), "'Simple'"
    for count_key, lo in (("servers", 1), ("agents", 0)):
        count = data.get(count_key, lo)
        if isinstance(count, bool) or not isinstance(count, int) or not lo <= count <= 9:
            return (count_key,), count, f"an integer from {lo} to 9"
    return None


def _labs(value: Any) -> Any:
    return None if value is None or value == {} else value


# ============================================================== the stack


def _user(value: Any) -> str:
    return _string(
        "a Unix user name: lowercase letter or '_' first, then up to 31 lowercase letters, digits, '_' "
        "or '-', and not a system account (root, daemon, nobody, ...)",
        _is_unix_name,
    )(value)


def _ssh_import(value: Any) -> str:
    text = _string()(value).strip()
    if not all(re.fullmatch(r"^(gh|lp):[A-Za-z0-9][A-Za-z0-9._-]*\Z", ident) for ident in text.split()):
        raise invalid("ssh-import-id names such as 'gh:octocat' or 'lp:name', space separated")
    return text


class StackModel(Section):
    """Every `classroom:` key of a stack file."""

    # ---- the chart's options
    hostName: Annotated[str, BeforeValidator(_dns_label())] = Field(
        "myserver",
        **doc(
            "Hostname (set in privileged mode) and first principal of the host certificate.",
            "a DNS label",
            example="opus",
        ),
    )
    user: Annotated[str, BeforeValidator(_user)] = Field(
        "human",
        **doc(
            "Default (instructor) account created by rc.local; gets sudo.",
            "a Unix user name, not a system account",
            example="mmatera",
        ),
    )
    userID: Annotated[int, BeforeValidator(integer(1000, 59999))] = Field(
        10000, **doc("UID of `user`.", "an integer from 1000 to 59999", minimum=1000, maximum=59999)
    )
    userSSHKey: Annotated[
        str,
        BeforeValidator(
            _string(
                "one OpenSSH public key line, e.g. 'ssh-ed25519 AAAA... me@host'",
                lambda s: not s or is_authorized_key(s),
                strip=True,
            )
        ),
    ] = Field(
        "",
        **doc(
            "Public key installed in the root-owned `/etc/ssh/authorized_keys/<user>`.",
            "one OpenSSH public key line",
            example="ssh-ed25519 AAAA… me@laptop",
        ),
    )
    userSSHImport: Annotated[str, BeforeValidator(_ssh_import)] = Field(
        "",
        **doc("ssh-import-id ids for `user`, space separated.", "gh:NAME / lp:NAME ids", example="gh:octocat lp:name"),
    )
    customizeRepo: Annotated[
        str,
        BeforeValidator(
            _string(
                "a git URL (https://, ssh://, git:// or git@host:path) or ''",
                lambda s: not s or bool(re.fullmatch(r"^(https?://|ssh://|git://|git@[^:]+:)\S+\Z", s)),
                strip=True,
            )
        ),
    ] = Field(
        "", **doc("Git repo cloned at boot (as `user`).", "a git URL or ''", example="https://github.com/me/setup.git")
    )
    customizeRepoCommand: Annotated[str, BeforeValidator(_string())] = Field(
        "", **doc("Run inside the clone; needs `customizeRepo`.", "a command", example="./install.sh")
    )
    customizeCommand: Annotated[str, BeforeValidator(_string())] = Field(
        "", **doc("Run in `user`'s home at boot.", "a command", example="make -C ~/dotfiles")
    )
    privileged: Annotated[bool, BeforeValidator(boolean)] = Field(
        True,
        **doc(
            "`true`: systemd as PID 1, a VM-like server, privileged container. `false`: sshd only, no "
            "privilege escalation, capabilities limited to what sshd needs, and no sudo for anyone.",
            "true or false",
            example=False,
        ),
    )
    rcEnv: Annotated[str, BeforeValidator(_string())] = Field(
        "",
        **doc(
            "Appended to `/etc/rc.env`, after the chart's variables (`DEFAULT_USER`, `DEFAULT_USER_ID`, "
            "`DEFAULT_KEY`, `DEFAULT_KEY_IMPORT`, `SET_HOSTNAME`, `CUSTOMIZE_*`), all exported. Set it with "
            "`pulumi config set --secret` to make rc.env a Secret.",
            "shell assignments",
            example="COURSE=cis90",
        ),
    )
    rcLocal: Annotated[str, BeforeValidator(_script)] = Field(
        "",
        **doc(
            "Replaces `/etc/rc.local`; must start with `#!` and should `touch /ready` (a preview warns when "
            "it does not: the pod would never become ready).",
            "a script starting with '#!' or ''",
            default_text="built-in script",
            example="#!/bin/bash\n…",
        ),
    )
    rcUser: Annotated[str, BeforeValidator(_script)] = Field(
        "",
        **doc(
            "Replaces `/etc/rc.user` (run as `user` at boot); must start with `#!`.",
            "a script starting with '#!' or ''",
            default_text="built-in script",
        ),
    )
    homeSize: Annotated[str, BeforeValidator(quantity(storage=True))] = Field(
        "2Gi",
        **doc(
            "Size of the `/home` volume. Growing it expands the claim in place.",
            "a Kubernetes quantity, at least 1Mi",
            example="50Gi",
            pattern=QUANTITY_PATTERN,
        ),
    )
    homeStorageClassName: Annotated[str, BeforeValidator(_STORAGE_CLASS)] = Field(
        "",
        **doc(
            '`""`: the Retain class this stack creates. A named class must have `reclaimPolicy: Retain`, '
            "or the run stops.",
            "a StorageClass name or ''",
            example="nfs-retain",
        ),
    )
    storageProvisioner: Annotated[
        str,
        BeforeValidator(
            _pattern(
                r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,252}\Z",
                "a CSI/provisioner name such as rancher.io/local-path or ebs.csi.aws.com",
            )
        ),
    ] = Field(
        "rancher.io/local-path",
        **doc(
            "Provisioner of the stack's Retain class (`<namespace>-retain`).",
            "a provisioner name",
            example="ebs.csi.aws.com",
        ),
    )
    storageParameters: Annotated[dict[str, str], BeforeValidator(string_map())] = Field(
        default_factory=dict, **doc("Parameters of that class.", "a mapping of strings", example={"type": "gp3"})
    )
    extraMounts: Annotated[tuple[MountModel, ...], BeforeValidator(_mounts)] = Field(
        (),
        **doc(
            "Extra volumes (`name`, `path`, `size`, optional `storageClassName`; the chart's `className` is "
            "accepted). Paths may not nest, and stay out of the system directories.",
            "a list of mounts",
            example=[{"name": "cis90", "path": "/home/cis90", "size": "20Gi"}],
        ),
    )
    extraPorts: Annotated[tuple[PortModel, ...], BeforeValidator(_mounts)] = Field(
        (),
        **doc(
            "Extra ports on the same Service (`name`, `port`, `protocol`; the chart's `proto` is accepted). "
            "No duplicate names or numbers, and not the SSH port.",
            "a list of ports",
            example=[{"name": "http", "port": 80, "protocol": "TCP"}],
        ),
    )
    image: ImageModel = Field(
        default_factory=lambda: ImageModel.model_validate({}),
        **doc(
            "Login image.",
            "a mapping",
            default_text="{repository: ghcr.io/mike-matera/cloud-native-server, tag: jammy-2022070801, "
            "pullPolicy: IfNotPresent, pullSecrets: []}",
            example={"repository": "ghcr.io/ORG/REPO", "tag": "noble-2026112301"},
        ),
    )
    resources: ResourcesModel = Field(
        default_factory=lambda: ResourcesModel.model_validate({}),
        **doc(
            "Login container. A request without a limit, or a limit without a request, is mirrored.",
            "a mapping",
            default_text="requests cpu 250m / memory 512Mi, limits cpu 2 / memory 2Gi",
            example={"limits": {"memory": "8Gi"}},
        ),
    )
    initResources: ResourcesModel = Field(
        default_factory=lambda: ResourcesModel.model_validate({}),
        **doc(
            "No effect (warned): the login pod has no init container since host certificates are signed at deploy "
            "time. Still validated, so stack files and chart values that carry it keep working.",
            "a mapping",
            default_text="unused",
        ),
    )
    nodeSelector: Annotated[
        dict[str, str],
        BeforeValidator(string_map(is_qualified_name, QUALIFIED_NAME_ACCEPTED, is_label_value, LABEL_VALUE_ACCEPTED)),
    ] = Field(
        default_factory=dict,
        **doc("Pod node selector (label keys and values).", "a mapping of labels", example={"disk": "ssd"}),
    )
    tolerations: Annotated[tuple[dict[str, Any], ...], BeforeValidator(lambda v: _tolerations(_k8s_int(v)))] = Field(
        (), **doc("Pod tolerations, checked against the Kubernetes 1.34 schema.", "a list of Kubernetes tolerations")
    )
    affinity: Annotated[dict[str, Any], BeforeValidator(_affinity)] = Field(
        default_factory=dict,
        **doc("Pod affinity, checked against the Kubernetes 1.34 schema.", "a Kubernetes Affinity"),
    )
    podAnnotations: Annotated[dict[str, str], BeforeValidator(_ANNOTATIONS)] = Field(
        default_factory=dict,
        **doc(
            "Extra pod annotations (the `classroom/` prefix is reserved).",
            "a mapping of annotation keys to strings",
            example={"backup.velero.io/backup-volumes": "home"},
        ),
    )
    namespace: Annotated[str | None, BeforeValidator(_optional(_string()))] = Field(
        None,
        **doc(
            "Namespace of everything. Fixed after the first `up`.",
            "a DNS label of at most 55 characters",
            default_text="classroom-<stack>",
            example="cis90",
        ),
    )
    createNamespace: Annotated[bool, BeforeValidator(boolean)] = Field(
        True, **doc("Create (and protect) the namespace, or use an existing one.", "true or false", example=False)
    )
    service: ServiceModel = Field(
        default_factory=lambda: ServiceModel.model_validate({}),
        **doc(
            "The SSH Service: `type` (LoadBalancer, NodePort or ClusterIP), `loadBalancerIP`, `annotations`, `port`, "
            "`nodePort`. Extra ports ride on it; a NetworkPolicy admits only the configured ports.",
            "a mapping",
            default_text="{type: LoadBalancer, port: 22}",
            example={"type": "LoadBalancer", "loadBalancerIP": "172.20.2.100"},
        ),
    )
    ssh: SshModel = Field(
        default_factory=lambda: SshModel.model_validate({}),
        **doc(
            "The CA: generated (`caAlgorithm`) and kept only in Pulumi state, or `existingSecret` (keys `ca_key` and "
            "`ca_key_pub`, or the chart's `ca_key.pub`). `knownHostsPatterns` shape the `@cert-authority` line; "
            "`hostPrincipals` add names to the host certificate. The chart's `ssh.ca_key` is refused: no private key "
            "belongs in a stack file.",
            "a mapping",
            default_text='{caAlgorithm: ed25519, knownHostsPatterns: ["*"]}',
            example={"existingSecret": "class-ca"},
        ),
    )
    # ---- access
    roster: RosterField
    term: TermField
    revocations: RevocationsField
    staffKeepOwnKeys: StaffKeepOwnKeysField
    adoptedUids: AdoptedUidsField
    # ---- labs
    labs: Annotated[LabsModel | None, BeforeValidator(_labs)] = Field(
        None, **doc("Lab hosts and per-student k3d clusters; see the labs table.", "a mapping", default_text="none")
    )

    @model_validator(mode="after")
    def _cross_rules(self) -> StackModel:
        if self.customizeRepoCommand and not self.customizeRepo:
            raise invalid(
                "'' unless customizeRepo is set", sub=("customizeRepoCommand",), value=self.customizeRepoCommand
            )
        _distinct_mounts(self.extraMounts)
        _distinct_ports(self.extraPorts, self.service.port)
        for key, value in self.podAnnotations.items():
            if key.startswith("classroom/"):
                raise invalid(
                    "keys outside the 'classroom/' prefix (the program owns it)",
                    sub=("podAnnotations", key),
                    value=value,
                )
        return self


# Section models and their place in the stack file, for the reference generator.
SECTIONS: dict[str, type[Section]] = {
    "": StackModel,
    "extraMounts[]": MountModel,
    "extraPorts[]": PortModel,
    "image": ImageModel,
    "resources": ResourcesModel,
    "service": ServiceModel,
    "ssh": SshModel,
    "roster[]": PersonModel,
    "roster (csv)": RosterCsvModel,
    "term": TermModel,
    "revocations": RevocationsModel,
    "labs": LabsModel,
    "labs.hosts[]": LabHostModel,
    "labs.ssh": LabSshModel,
    "labs.hooks.init / cleanup": HookModel,
}
# Keys whose value is text in the stack file: the engine's text is never
# JSON-decoded for them, so `rcEnv: "true"` stays the text "true".
STRING_KEYS = frozenset(name for name, f in StackModel.model_fields.items() if f.annotation in (str, str | None))


def validate_stack(raw: Mapping[str, Any]) -> StackModel:
    """The validated model, or ConfigError naming the first problem."""
    try:
        return StackModel.model_validate(raw)
    except ValidationError as error:
        raise config_error(error, StackModel) from None


def validate_section(model: type[Section], raw: Any, where: str) -> Any:
    """Validate one section on its own (rosterdata's and labconfig's entry points)."""
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        first = config_error(error, model)
        inner = first.key if first.key != "config" else ""
        key = ".".join(k for k in (where, inner) if k).replace(".[", "[")
        raise ConfigError(key, first.value, first.accepted) from None
