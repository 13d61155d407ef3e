"""The checks STYLE.md asks for, run as tests so CI enforces them: ruff lint, ruff format, mypy --strict."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "actors",
    "api",
    "artifacts",
    "autoscale",
    "client",
    "core",
    "messaging",
    "models",
    "notifications",
    "scheduler",
    "services",
    "store",
)


def run(*command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_ruff_finds_no_lint_errors() -> None:
    result = run(sys.executable, "-m", "ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_code_is_ruff_formatted() -> None:
    result = run(sys.executable, "-m", "ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_passes_on_every_package(tmp_path: Path) -> None:
    # The folders install as ``engineroom.*`` through package-dir, which mypy cannot follow from the checkout:
    # give it a directory where ``engineroom`` is this checkout.
    (tmp_path / "engineroom").symlink_to(ROOT)
    targets = [argument for package in PACKAGES for argument in ("-p", f"engineroom.{package}")]
    result = run(
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(ROOT / "pyproject.toml"),
        "--cache-dir",
        str(tmp_path / "cache"),
        *targets,
        "-m",
        "engineroom.cli",
        "-m",
        "engineroom.dev",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
