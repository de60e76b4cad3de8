"""classroom: the operator's one command line (the `classroom` console script, pyproject.toml).

    classroom roster issue  --stack S --out DIR [--ca-key F [--roster-json F]] [--host H] [--port N]
    classroom roster status --stack S [--from-config | --roster-json F] [--json]
    classroom roster revoke --stack S USER | --serial N | --key K
    classroom term end    --stack S [--summary FILE] [--json] [--skip-destroy] [--yes]
    classroom term new    --from OLD --to NEW --start YYYY-MM-DD --end YYYY-MM-DD [--roster F.csv] [--adopt-homes]
    classroom term status [--json]

This module only parses the arguments (click) and turns the commands' errors into one line on
stderr and an exit status: 0 done, 1 a tool (pulumi, kubectl) failed, 2 bad input. What each
command does is in ops/roster.py and ops/term.py.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from datetime import date
from types import SimpleNamespace
from typing import Any

import click
import yaml

from components.errors import ConfigError
from ops import roster as roster_ops
from ops import term as term_ops
from ops.errors import OperatorError

Command = Callable[[SimpleNamespace], int]


def run(command: Command, *, unexpected: tuple[type[Exception], ...] = (), **options: Any) -> None:
    """Run a command with the parsed options; its errors become `classroom GROUP CMD: error: ...`."""
    ctx = click.get_current_context()
    where = ctx.command_path

    def fail(message: str, status: int = 2) -> None:
        click.echo(f"{where}: error: {message}", err=True)
        ctx.exit(status)

    try:
        status = command(SimpleNamespace(**options))
    except OperatorError as error:
        fail(str(error), error.status)
    except ConfigError as error:
        fail(str(error))
    except unexpected as error:
        # Malformed inputs that got past the commands' own checks (a hand-edited roster.json, say).
        fail(f"unexpected input: {error!r}")
    except OSError as error:
        fail(f"{error.filename or ''}: {error.strerror}")
    else:
        ctx.exit(status)


class Day(click.ParamType):
    """A YYYY-MM-DD option: click names the option in front of term.parse_day's reason."""

    name = "YYYY-MM-DD"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> date:
        if isinstance(value, date):
            return value
        try:
            return term_ops.parse_day(str(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)


stacks_dir_option = click.option(
    "--stacks-dir",
    default="stacks",
    show_default=True,
    help="directory of Pulumi.<stack>.yaml (its parent is the project)",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def classroom() -> None:
    """Operate a class's login server: certificates and revocations, the end and start of a term."""


# ------------------------------------------------------------------ roster


@classroom.group()
@click.option("--project", help="project directory (default: cwd if it has Pulumi.yaml, else the repo)")
@click.pass_context
def roster(ctx: click.Context, project: str | None) -> None:
    """Certificates, status and revocation for one class's stack."""
    ctx.ensure_object(dict)["project"] = project


ROSTER_UNEXPECTED = (ValueError, KeyError, yaml.YAMLError)


@roster.command()
@click.option("--stack", required=True, help="the class's stack, e.g. cis90-fall2026")
@click.option("--out", required=True, help="directory to write into")
@click.option("--ca-key", help="CA private key (OpenSSH); sign locally instead of reading stack outputs")
@click.option("--roster-json", help="with --ca-key: roster.json from the roster ConfigMap (default: the stack file)")
@click.option("--host", help="login server address for ssh_config/known_hosts (default: sshHost output)")
@click.option("--port", type=int, help="ssh port (default: sshPort output, or 22)")
@click.pass_obj
def issue(obj: dict[str, Any], **options: Any) -> None:
    """Write <user>-cert.pub files, known_hosts and an ssh_config snippet."""
    run(roster_ops.cmd_issue, unexpected=ROSTER_UNEXPECTED, project=obj["project"], **options)


@roster.command("status")
@click.option("--stack", required=True, help="the class's stack, e.g. cis90-fall2026")
@click.option("--roster-json", help="roster.json from the roster ConfigMap instead of stack outputs")
@click.option("--from-config", is_flag=True, help="read the stack file instead of stack outputs")
@click.option("--json", is_flag=True, help="machine-readable output")
@click.pass_obj
def roster_status(obj: dict[str, Any], **options: Any) -> None:
    """Who has what access, and until when."""
    if options["roster_json"] and options["from_config"]:
        raise click.UsageError("--from-config: not allowed with --roster-json (give one source)")
    run(roster_ops.cmd_status, unexpected=ROSTER_UNEXPECTED, project=obj["project"], **options)


@roster.command()
@click.option("--stack", required=True, help="the class's stack, e.g. cis90-fall2026")
@click.argument("user", required=False)
@click.option("--serial", type=int, multiple=True, help="a certificate serial (repeatable)")
@click.option("--key", multiple=True, help="a public key file, key line or SHA256: fingerprint (repeatable)")
@click.pass_obj
def revoke(obj: dict[str, Any], **options: Any) -> None:
    """Add to classroom:revocations in stacks/Pulumi.<stack>.yaml (USER: every key of that person)."""
    if not (options["user"] or options["serial"] or options["key"]):
        raise click.UsageError("give a USER, --serial N or --key KEY")
    run(roster_ops.cmd_revoke, unexpected=ROSTER_UNEXPECTED, project=obj["project"], **options)


# ------------------------------------------------------------------ term


@classroom.group()
def term() -> None:
    """Close a term, start the next one, list every stack's term."""


@term.command()
@stacks_dir_option
@click.option("--stack", required=True, help="stack to close, e.g. cis90-fall2026")
@click.option("--summary", help="Markdown summary file (default: out/end-of-term-<stack>.md)")
@click.option("--json", is_flag=True, help="also write the summary as JSON next to it (.json)")
@click.option("--skip-destroy", is_flag=True, help="only write the summary")
@click.option("--yes", is_flag=True, help="destroy without asking (otherwise: type the stack name at a terminal)")
def end(**options: Any) -> None:
    """Destroy all but the protected homes, then list what is kept."""
    run(term_ops.cmd_end, **options)


@term.command()
@stacks_dir_option
@click.option("--from", "from_stack", required=True, help="the old stack, e.g. cis90-fall2026")
@click.option("--to", "to_stack", required=True, help="the new stack, e.g. cis90-spring2027")
@click.option("--start", required=True, type=Day(), help="first day of access")
@click.option("--end", required=True, type=Day(), help="last day of access")
@click.option("--roster", help="this term's roster CSV (the registrar's or LMS export)")
@click.option("--adopt-homes", is_flag=True, help="keep the old namespace so the kept homes are adopted")
def new(**options: Any) -> None:
    """Write the next term's stack file from the last one."""
    run(term_ops.cmd_new, **options)


@term.command("status")
@stacks_dir_option
@click.option("--json", is_flag=True, help="print JSON instead of a table")
@click.pass_obj
def term_status(obj: dict[str, Any] | None, **options: Any) -> None:
    """Every stack's class, term, students, server, state."""
    run(term_ops.cmd_status, today=(obj or {}).get("today"), **options)


# ------------------------------------------------------------------ entry point


def main(argv: Sequence[str] | None = None, *, today: date | None = None) -> int:
    """The console script; `today` fixes the date `term status` compares with (tests)."""
    try:
        classroom.main(
            args=list(argv) if argv is not None else None, prog_name="classroom", obj={"today": today, "project": None}
        )
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
