"""labd: per-student k3d clusters behind an HMAC-authenticated HTTP API."""

__version__ = "0.1.0"
