"""Which stacks a change touches, for the preview and deploy workflows.

A changed stack file `stacks/Pulumi.<stack>.yaml` selects that stack; a change to the program
itself (components/, __main__.py, requirements*.txt, Pulumi.yaml) or to the policy pack selects
every stack, because any of them may plan differently now.

Usage::

    python -m ops.changed_stacks --base BASE_SHA --head HEAD_SHA [--exclude dev] \
        [--github-output "$GITHUB_OUTPUT"]
    python -m ops.changed_stacks --stack cis90-fall2026      # a manual run names one stack

prints a JSON list (`["cis90-fall2026"]`) usable as a GitHub Actions matrix, and with
--github-output appends `stacks=<json>` and `any=true|false`.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

STACK_FILE_RE = re.compile(r"^stacks/Pulumi\.(?P<stack>[A-Za-z0-9_.-]+)\.yaml$")

# Paths whose change can alter the plan of every stack.
PROGRAM_PATTERNS = (
    "Pulumi.yaml",
    "__main__.py",
    "requirements*.txt",
    "components/*",
    "policy/*",
)

ZERO_SHA = re.compile(r"^0+$")


class ChangedStacksError(Exception):
    """Bad arguments or a git failure; the message says which and what is accepted."""


def existing_stacks(root: Path) -> list[str]:
    stacks = []
    for path in sorted((root / "stacks").glob("Pulumi.*.yaml")):
        match = STACK_FILE_RE.fullmatch(f"stacks/{path.name}")
        if match:
            stacks.append(match.group("stack"))
    return stacks


def is_program_path(path: str) -> bool:
    # fnmatch's "*" crosses "/", so "components/*" covers every depth below components/.
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in PROGRAM_PATTERNS)


def changed_stacks(changed_paths: Iterable[str], stacks: Sequence[str], exclude: Iterable[str] = ()) -> list[str]:
    """Stacks to preview/deploy, in the order of `stacks` (the stack files present at head)."""
    excluded = set(exclude)
    present = [s for s in stacks if s not in excluded]
    selected: set[str] = set()
    for path in changed_paths:
        path = path.strip()
        if not path:
            continue
        if is_program_path(path):
            return present
        match = STACK_FILE_RE.fullmatch(path)
        if match:
            selected.add(match.group("stack"))
    # A deleted stack file selects nothing: ending a term (`pulumi destroy`) is a deliberate manual step.
    return [s for s in present if s in selected]


def git_changed_paths(root: Path, base: str, head: str) -> list[str] | None:
    """Paths changed between base and head; None when base is unusable (new branch, force-push)."""
    if not base or ZERO_SHA.fullmatch(base):
        return None
    try:
        subprocess.run(
            ["git", "cat-file", "-e", f"{base}^{{commit}}"], cwd=root, check=True, capture_output=True, text=True
        )
    except subprocess.CalledProcessError:
        return None
    try:
        result = subprocess.run(
            ["git", "diff", "--name-only", "--no-renames", base, head],
            cwd=root,
            check=True,
            capture_output=True,
            text=True,
        )
    except subprocess.CalledProcessError as exc:
        raise ChangedStacksError(f"--head: git cannot diff {base}..{head}: {exc.stderr.strip()}") from None
    return result.stdout.splitlines()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.changed_stacks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="", help="commit before the change (PR base or push 'before')")
    parser.add_argument("--head", default="HEAD", help="commit after the change")
    parser.add_argument("--paths-from", help="read changed paths from this file instead of git (one per line)")
    parser.add_argument("--stack", help="select exactly this stack (manual run); it must have a stack file")
    parser.add_argument("--exclude", action="append", default=[], help="stack to leave out (repeatable)")
    parser.add_argument("--root", default=".", help="repository root")
    parser.add_argument("--github-output", help="append stacks=<json> and any=true|false to this file")
    args = parser.parse_args(argv)

    root = Path(args.root)
    try:
        if not (root / "Pulumi.yaml").is_file():
            raise ChangedStacksError(f"--root: {str(root)!r} has no Pulumi.yaml; pass the repository root")
        stacks = existing_stacks(root)
        exclude = [name for item in args.exclude for name in item.replace(",", " ").split()]
        paths: list[str] | None
        if args.stack:
            if args.stack not in stacks:
                raise ChangedStacksError(
                    f"--stack: {args.stack!r} has no stacks/Pulumi.{args.stack}.yaml; "
                    f"stacks here: {', '.join(stacks) or 'none'}"
                )
            paths = [f"stacks/Pulumi.{args.stack}.yaml"]
            exclude = []
        elif args.paths_from:
            try:
                paths = Path(args.paths_from).read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise ChangedStacksError(f"--paths-from: cannot read {args.paths_from!r}: {exc.strerror}") from None
        else:
            paths = git_changed_paths(root, args.base, args.head)
        # Without a usable base (first push of a branch) every stack is a candidate.
        selected = (
            [s for s in stacks if s not in set(exclude)] if paths is None else changed_stacks(paths, stacks, exclude)
        )
    except ChangedStacksError as exc:
        print(f"ops.changed_stacks: {exc}", file=sys.stderr)
        return 2

    encoded = json.dumps(selected)
    print(encoded)
    if args.github_output:
        with open(args.github_output, "a", encoding="utf-8") as fh:
            fh.write(f"stacks={encoded}\n")
            fh.write(f"any={'true' if selected else 'false'}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
