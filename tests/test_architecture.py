"""The import contracts of pyproject.toml catch what they promise to catch.

`make lint` runs them on the real tree; here each contract is broken on purpose in a copy of
the package, so a contract that silently stopped checking (a typo, a renamed package) fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _contracts_config(directory: Path) -> Path:
    """The [tool.importlinter] section of the project, alone in a TOML file."""
    section = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    lines = ["[tool.importlinter]"]
    for key, value in section.items():
        if key != "contracts":
            lines.append(f"{key} = {_toml(value)}")
    for contract in section["contracts"]:
        lines.append("[[tool.importlinter.contracts]]")
        lines.extend(f"{key} = {_toml(value)}" for key, value in contract.items())
    path = directory / "contracts.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return '"' + str(value).replace('"', '\\"') + '"'


def _lint(tree: Path, config: Path) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(config)],
        cwd=tree,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "src" / "callbridge",
        tmp_path / "callbridge",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return tmp_path


def test_the_real_tree_keeps_every_contract(package_copy: Path) -> None:
    result = _lint(package_copy, _contracts_config(package_copy))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


@pytest.mark.parametrize(
    ("files", "contract"),
    [
        ({"media/violation.py": "import callbridge.engine.session\n"}, "layers"),
        ({"rtvbp/violation.py": "from callbridge.server import cli\n"}, "layers"),
        ({"media/violation.py": "import asyncio\n"}, "media is pure"),
        ({"media/violation.py": "import socket\n"}, "media is pure"),
        ({"engine/violation.py": "import pipecat\n"}, "only the integrations"),
        ({"integrations/violation.py": "import callbridge.engine.session\n"}, "layers"),
        (
            {
                "engine/violation_a.py": "from callbridge.engine import violation_b\n",
                "engine/violation_b.py": (
                    "from typing import TYPE_CHECKING\n"
                    "if TYPE_CHECKING:\n"
                    "    from callbridge.engine import violation_a\n"
                ),
            },
            "no import cycle",
        ),
    ],
)
def test_a_deliberate_violation_is_caught(
    package_copy: Path, files: dict[str, str], contract: str
) -> None:
    for name, text in files.items():
        (package_copy / "callbridge" / name).write_text(text)
    result = _lint(package_copy, _contracts_config(package_copy))
    assert result.returncode != 0
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(line.startswith(contract) for line in broken), result.stdout
