"""The package's own hygiene: no dead code, and every library it imports is declared."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared_requirements(project_root: Path) -> dict[str, int]:
    """Runtime requirements by canonical name, with the line each is declared on."""
    lines = (project_root / "pyproject.toml").read_text().splitlines()
    declared = tomllib.loads("\n".join(lines))["project"]["dependencies"]
    names = {_canonical(re.split(r"[\[<>=!~ ;]", spec, maxsplit=1)[0]) for spec in declared}
    found: dict[str, int] = {}
    for number, line in enumerate(lines):
        match = re.match(r'\s*"([A-Za-z0-9_.-]+)', line)
        if match and _canonical(match.group(1)) in names:
            found.setdefault(_canonical(match.group(1)), number)
    assert set(found) == names
    return found


def _imported_distributions(package: Path) -> dict[str, set[str]]:
    """Third-party distributions imported anywhere in the package, with the modules importing."""
    owners = packages_distributions()
    imported: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top == "flyswatter":
                    continue
                for distribution in owners.get(top, [top]):
                    imported.setdefault(_canonical(distribution), set()).add(path.name)
    return imported


def test_every_imported_library_is_a_declared_dependency(project_root: Path) -> None:
    declared = _declared_requirements(project_root)
    imported = _imported_distributions(project_root / "flyswatter")
    undeclared = {name: sorted(where) for name, where in imported.items() if name not in declared}
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_every_dependency_says_why_it_is_there(project_root: Path) -> None:
    lines = (project_root / "pyproject.toml").read_text().splitlines()
    for name, number in _declared_requirements(project_root).items():
        above = number - 1
        # A comment may cover a group of requirements declared together.
        while above >= 0 and lines[above].strip().startswith('"'):
            above -= 1
        assert lines[above].strip().startswith("#"), f"{name}: no comment says why"


def test_no_dead_code(project_root: Path) -> None:
    # Configured in pyproject.toml ([tool.vulture]): the package at 60% confidence, the names
    # only frameworks call listed there.
    found = subprocess.run(
        [sys.executable, "-m", "vulture"],
        cwd=project_root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.returncode == 0, found.stdout + found.stderr
