"""``.ci/run`` runs exactly the test command the README gives, so a developer's run is CI's."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_test_command() -> str:
    """The pytest part of the README's second set-up command (``pip install ... && python -m pytest ...``)."""
    block = re.search(r"```\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    assert block is not None, "the README opens with no command block"
    install_and_test = block.group(1).splitlines()[1]
    return install_and_test.split("&&")[1].strip()


def ci_test_command() -> str:
    """The pytest line of ``.ci/run`` with its defaults filled in (``${PYTEST_WORKERS:-3}`` → ``3``)."""
    [line] = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if "python -m pytest" in line]
    command = line.split("||")[0].strip()
    return re.sub(r'"\$\{\w+:-([^}]*)\}"', r"\1", command)


def test_ci_runs_the_readmes_test_command() -> None:
    assert readme_test_command() == ci_test_command() == "python -m pytest -n 3"
