"""The Pulumi engine for the operator's commands, through its Automation API (`pulumi.automation`).

The commands used to run `pulumi` and parse what it printed; the Automation API runs the same
CLI and hands back typed results (`Stack.outputs()`, `Stack.export_stack()`, `Stack.destroy()`).
It runs the `pulumi` on PATH in the project directory with this process's environment, so the
backend, PULUMI_HOME and the passphrase are the ones `make up` uses (PULUMI_BACKEND_URL,
PULUMI_HOME, PULUMI_CONFIG_PASSPHRASE[_FILE]; tools/up.sh, `tools/toolchain.sh env`).

Selecting a stack through the API (`pulumi stack select`) would also change the stack the
instructor's own `pulumi` commands act on; `stack()` puts the previous selection back.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pulumi import automation as auto


class EngineUnavailable(Exception):
    """No `pulumi` on PATH: the caller says what needs it and what works without it."""


class EngineFailed(Exception):
    """pulumi ran and failed (or printed no JSON); the message is what it said last."""


def reason(error: auto.CommandError, limit: int = 400) -> str:
    """The last lines the CLI wrote to stderr (or stdout), for a one-line error."""
    text = str(error)
    _, _, stderr = text.partition(" stderr: ")
    lines = [line.strip() for line in (stderr or text).splitlines() if line.strip()]
    return " ".join(lines[-3:])[-limit:] or "no message"


@contextmanager
def stack(name: str, project: Path) -> Iterator[auto.Stack]:
    """The project's stack `name` (which must exist), with the previous selection restored afterwards.

    Every failure of the engine inside the block is an EngineFailed.
    """
    if shutil.which("pulumi") is None:
        raise EngineUnavailable("pulumi is not on PATH")
    try:
        workspace = auto.LocalWorkspace(work_dir=str(project))
        before = workspace.stack()
        selected = auto.Stack.select(name, workspace)
    except auto.CommandError as error:
        raise EngineFailed(reason(error)) from None
    except (OSError, subprocess.CalledProcessError, auto.InvalidVersionError) as error:
        raise EngineFailed(f"cannot run pulumi ({error})") from None
    try:
        yield selected
    except auto.CommandError as error:
        raise EngineFailed(reason(error)) from None
    except ValueError as error:  # the JSON the API parses
        raise EngineFailed(f"pulumi did not print JSON ({error})") from None
    finally:
        try:
            if before is None:
                workspace.pulumi_command.run(["stack", "unselect"], str(project), {})
            elif before.name != name:
                workspace.select_stack(before.name)
        except auto.CommandError as error:
            previous = before.name if before else "none"
            print(f"warning: could not select stack {previous} again: {reason(error)}", file=sys.stderr)


def outputs(name: str, project: Path) -> dict[str, Any]:
    """The stack's outputs, secrets in plain text (`pulumi stack output --show-secrets`)."""
    with stack(name, project) as selected:
        return {key: output.value for key, output in selected.outputs().items()}


def resources(name: str, project: Path) -> list[Any]:
    """The resources in the stack's state (`pulumi stack export`)."""
    with stack(name, project) as selected:
        deployment = selected.export_stack().deployment
    found = deployment.get("resources") if isinstance(deployment, dict) else None
    return found if isinstance(found, list) else []


def destroy_unprotected(name: str, project: Path, on_output: Callable[[str], None]) -> None:
    """`pulumi destroy --exclude-protected`: everything but the protected resources goes."""
    with stack(name, project) as selected:
        selected.destroy(exclude_protected=True, on_output=on_output)
