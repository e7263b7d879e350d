"""The import-cycle contract in pyproject.toml is not vacuous: run on a package with a circle, it fails."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def cycle_contract() -> dict[str, Any]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    [contract] = [c for c in contracts if c["type"] == "acyclic_siblings"]
    assert contract["ancestors"] == ["gatherly"]  # the whole project, every depth below it
    return contract


def lint(package: Path, contract: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """lint-imports on `package` with the project's contract, pointed at it instead of gatherly."""
    name = package.name
    ancestors = ", ".join(f'"{a.replace("gatherly", name, 1)}"' for a in contract["ancestors"])
    (package.parent / "pyproject.toml").write_text(
        f'[tool.importlinter]\nroot_packages = ["{name}"]\n\n'
        f'[[tool.importlinter.contracts]]\nname = "{contract["name"]}"\ntype = "{contract["type"]}"\n'
        f"ancestors = [{ancestors}]\n"
    )
    lint_imports = Path(sys.executable).parent / "lint-imports"
    env = {**os.environ, "PYTHONPATH": str(package.parent)}
    return subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=package.parent, env=env, capture_output=True, text=True, timeout=60
    )


def write_package(root: Path, modules: dict[str, str]) -> Path:
    for path, source in modules.items():
        file = root / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(source)
    return root / "sample"


@pytest.mark.parametrize(
    "circle",
    [
        # Two modules of one package, as app/compose.py and app/demo.py were (one side only for type checking).
        {
            "sample/app/compose.py": "from sample.app import demo\n",
            "sample/app/demo.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from sample.app import compose\n"
            ),
        },
        # Two packages, through modules deep inside each.
        {
            "sample/kernel/log/base.py": "import sample.app.server\n",
            "sample/app/server.py": "import sample.kernel.log.base\n",
        },
    ],
)
def test_the_cycle_contract_fails_on_a_circle(tmp_path: Path, circle: dict[str, str]) -> None:
    package = write_package(tmp_path, {"sample/__init__.py": "", **circle})
    for directory in package.rglob("*"):
        if directory.is_dir():
            (directory / "__init__.py").touch()
    result = lint(package, cycle_contract())
    assert result.returncode == 1, result.stdout + result.stderr
    assert "BROKEN" in result.stdout and "No cycles are allowed" in result.stdout


def test_the_cycle_contract_passes_without_a_circle(tmp_path: Path) -> None:
    package = write_package(
        tmp_path,
        {
            "sample/__init__.py": "",
            "sample/app/__init__.py": "",
            "sample/app/compose.py": "from sample.app import demo\n",
            "sample/app/demo.py": "",
        },
    )
    result = lint(package, cycle_contract())
    assert result.returncode == 0, result.stdout + result.stderr
