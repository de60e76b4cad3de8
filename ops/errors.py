"""The one error the operator's commands raise for a person to read (ops/cli.py prints it)."""

from __future__ import annotations


class OperatorError(Exception):
    """Bad input (exit 2) or a failed tool (exit 1); the message names the argument or the tool."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status
