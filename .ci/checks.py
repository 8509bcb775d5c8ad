"""Lint, types and import contracts: what CI runs before the tests, and what to run by hand.

    python .ci/checks.py                  # all of them, in this order
    python .ci/checks.py mypy imports     # some of: packages, ruff, mypy, imports

Why a script and not bare ``mypy`` and ``lint-imports``: ``evtrack.projections`` lives in the
top-level ``projections/`` folder and is mapped into the package by setuptools' ``package-dir``
(pyproject.toml). Python finds it through the installation, but mypy and import-linter find
modules by walking folders and know nothing of ``package-dir``: run bare, mypy cannot resolve
``evtrack.projections`` and import-linter does not see it. This script reads the mapping from
pyproject.toml, as setuptools does, and gives both tools the package as it is installed:

- packages: every folder with an ``__init__.py`` under a mapped root is listed in
  ``[tool.setuptools] packages``, so the wheel ships every module the tools check;
- mypy (strict config from pyproject.toml) gets every module with its installed name and its
  real file, so errors point at the files to edit;
- import-linter (contracts in pyproject.toml) reads a throwaway tree of links shaped like the
  installed package; its findings name modules and lines, which are the same in both.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
RUFF_PATHS = ["src", "tests", "projections", "benchmarks", ".ci"]


def _setuptools_config() -> dict[str, object]:
    config: dict[str, object] = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]
    return config


def _package_dir() -> dict[str, str]:
    mapping = _setuptools_config()["package-dir"]
    assert isinstance(mapping, dict)
    return {str(k): str(v) for k, v in mapping.items()}


def _packages() -> list[str]:
    packages = _setuptools_config()["packages"]
    assert isinstance(packages, list)
    return [str(p) for p in packages]


def _folder(package: str, package_dir: dict[str, str]) -> Path:
    """The folder setuptools builds ``package`` from: its longest mapped prefix, then the rest."""
    parts = package.split(".")
    for i in range(len(parts), -1, -1):
        prefix = ".".join(parts[:i])
        if prefix in package_dir:
            return ROOT.joinpath(package_dir[prefix], *parts[i:])
    return ROOT.joinpath(*parts)


def modules() -> dict[str, Path]:
    """Installed module name -> source file, for every module of the listed packages."""
    package_dir = _package_dir()
    found: dict[str, Path] = {}
    for package in _packages():
        for file in sorted(_folder(package, package_dir).glob("*.py")):
            found[package if file.stem == "__init__" else f"{package}.{file.stem}"] = file
    return found


def check_packages() -> int:
    """Fail when a package folder under a mapped root is missing from the packages list."""
    package_dir = _package_dir()
    listed = set(_packages())
    missing: list[str] = []
    for prefix, folder in package_dir.items():
        base = ROOT / folder
        for init in sorted(base.rglob("__init__.py")):
            rel = init.parent.relative_to(base).parts
            name = ".".join(p for p in (prefix, *rel) if p)
            # A folder mapped elsewhere (src/ has no evtrack/projections) is not this root's.
            if name and _folder(name, package_dir) == init.parent and name not in listed:
                missing.append(f"{name} ({init.parent.relative_to(ROOT)})")
    for name in missing:
        print(f"pyproject.toml: package {name} is not in [tool.setuptools] packages")
    if missing:
        print("A wheel would leave these out; add them to the list.")
        return 1
    print(f"packages: all {len(listed)} package folders are listed")
    return 0


def run_ruff() -> int:
    return subprocess.call([sys.executable, "-m", "ruff", "check", *RUFF_PATHS], cwd=ROOT)


def run_mypy() -> int:
    # mypy's own API: the command line cannot give a file a module name other than its path's.
    from mypy import build, util
    from mypy.errors import CompileError
    from mypy.fscache import FileSystemCache
    from mypy.main import process_options
    from mypy.modulefinder import BuildSource

    fscache = FileSystemCache()
    # The [tool.mypy] section of pyproject.toml (strict) gives the options; the sources are ours.
    _, options = process_options(
        ["--config-file", str(PYPROJECT)], require_targets=False, fscache=fscache
    )
    sources = [
        BuildSource(str(path.relative_to(ROOT)), module) for module, path in modules().items()
    ]
    messages: list[str] = []

    def flush_errors(_filename: str | None, new_messages: list[str], _serious: bool) -> None:
        messages.extend(new_messages)
        for message in new_messages:
            print(message)

    try:
        build.build(sources, options, flush_errors=flush_errors, fscache=fscache)
    except CompileError as exc:  # a blocking error (syntax, bad config): messages say which
        for message in exc.messages:
            if message not in messages:
                print(message)
        return 2
    n_errors, _, n_files = util.count_stats(messages)
    if n_errors:
        print(f"mypy: found {n_errors} errors in {n_files} files ({len(sources)} source files)")
        return 1
    print(f"mypy: no issues found in {len(sources)} source files")
    return 0


def run_import_linter() -> int:
    with tempfile.TemporaryDirectory(prefix="evtrack-import-graph-") as tree:
        for module, path in modules().items():
            parts = module.split(".")
            link = Path(tree, *parts, "__init__.py") if path.name == "__init__.py" else Path(
                tree, *parts[:-1], f"{parts[-1]}.py"
            )
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path)
        # The tree comes first on sys.path, before the installed (editable) evtrack.
        search = os.pathsep.join(p for p in (tree, os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "PYTHONPATH": search}
        code = (
            "import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(no_cache=True, no_logo=True))"
        )
        return subprocess.call([sys.executable, "-c", code], cwd=ROOT, env=env)


CHECKS: dict[str, Callable[[], int]] = {
    "packages": check_packages,
    "ruff": run_ruff,
    "mypy": run_mypy,
    "imports": run_import_linter,
}


def main(argv: list[str]) -> int:
    names = argv or list(CHECKS)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        print(f"unknown check(s) {unknown}; choose from {list(CHECKS)}", file=sys.stderr)
        return 2
    os.chdir(ROOT)  # mypy and import-linter read pyproject.toml from the working directory
    failed: list[str] = []
    for name in names:
        print(f"\n== {name}", flush=True)
        started = time.monotonic()
        status = CHECKS[name]()
        sys.stdout.flush()
        outcome = "ok" if status == 0 else "FAILED"
        print(f"-- {name}: {outcome} ({time.monotonic() - started:.1f} s)")
        if status:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
