"""The checks STYLE.md asks for, run as tests so CI enforces them: ruff lint, ruff format, mypy --strict over the
product, its tests and the benchmarks."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
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
#: Top-level packages besides ``engineroom``: they import the product as ``engineroom.*``.
TOOLING = ("tests", "bench")


def run(*command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_ruff_finds_no_lint_errors() -> None:
    result = run(sys.executable, "-m", "ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_code_is_ruff_formatted() -> None:
    result = run(sys.executable, "-m", "ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def mypy_layout() -> Path:
    """A directory where ``engineroom`` is this checkout (the folders install as ``engineroom.*`` through
    package-dir, which mypy cannot follow from the checkout) and ``tests`` and ``bench`` are its folders. It stays
    outside the checkout, one per checkout, so mypy's cache in it makes a second run take seconds."""
    layout = Path(tempfile.gettempdir()) / f"engineroom-mypy-{hashlib.sha256(bytes(ROOT)).hexdigest()[:12]}"
    layout.mkdir(exist_ok=True)
    for name, target in (("engineroom", ROOT), *((name, ROOT / name) for name in TOOLING)):
        link = layout / name
        if not link.is_symlink():
            link.symlink_to(target)
    return layout


def test_mypy_strict_passes_on_every_package_the_tests_and_the_benchmarks() -> None:
    layout = mypy_layout()
    packages = [f"engineroom.{package}" for package in PACKAGES] + list(TOOLING)
    result = run(
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(ROOT / "pyproject.toml"),
        "--cache-dir",
        str(layout / ".mypy_cache"),
        *[argument for package in packages for argument in ("-p", package)],
        "-m",
        "engineroom.cli",
        "-m",
        "engineroom.dev",
        cwd=layout,
    )
    assert result.returncode == 0, result.stdout + result.stderr
