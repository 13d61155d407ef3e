"""Imports point one way: a product module imports its own top-level folder and folders of lower layers only.

The order is ``LAYERS`` below (tracker issue 18). Folders of one layer never import each other: the edges (gateway,
workers, scheduler, autoscaler, client) share code through ``services/`` and below, not through one another.
Imports under ``if TYPE_CHECKING:`` count: a type-only arrow still couples the folders (mypy follows it, and a
change below breaks the module above), so a layer may not name a higher one even in an annotation. Imports inside
functions count too. Only ``engineroom.*`` imports are read (with ``ast``, not regex); third-party ones are free.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Top-level folders that are not shipped (pyproject lists the packages), so not layered.
NOT_PRODUCT = frozenset({"tests", "bench", "deploy", "docs"})
#: The root ``__init__.py`` (``__version__`` only): importable from anywhere.
ROOT_MODULE = "engineroom"

#: Lowest first. A folder may import a folder of a lower layer, never one of its own layer or a higher one.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("core",),  # pure building blocks: settings, errors, ids, clock, cron, durations, backoff, pressure, logs
    ("models",),  # pydantic documents, bodies and events
    ("store", "messaging"),  # the I/O adapters: MongoDB (store), RabbitMQ (the Dramatiq broker, the events bus)
    ("artifacts",),  # the files tasks save: GridFS (on the store's database) or S3, and their signed links
    ("services",),  # use cases the edges share: submit, control, workflows, schedules, the outbox, events, tasks
    ("notifications",),  # what the edges host to get events to people: notifier, WebSocket hub, email, webhooks
    ("api", "actors", "scheduler", "autoscale", "client"),  # the edges: processes' parts, never importing each other
    ("dev",),  # a composition root: ``engineroom dev``'s wiring of every part into one process
    ("cli",),  # the composition root of every process: the ``engineroom`` command
)
LAYER_OF = {folder: index for index, layer in enumerate(LAYERS) for folder in layer}


@dataclass(frozen=True)
class Arrow:
    """One import against the order: where it is, what it imports and which rule it breaks."""

    path: str
    line: int
    module: str
    imported: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.module} imports {self.imported}: {self.rule}"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((ROOT_MODULE, *parts))


def folder_of(module: str) -> str | None:
    """The top-level folder (or root module such as ``cli``) of ``engineroom.<folder>...``; None for the root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def imported_modules(tree: ast.Module, module: str, is_package: bool) -> list[tuple[int, str]]:
    """Every ``engineroom`` module ``tree`` imports, anywhere in it (functions and ``TYPE_CHECKING`` blocks too)."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # ``from engineroom import api`` names a folder: count each name as a possible submodule.
            found += [(node.lineno, f"{base}.{alias.name}" if base == ROOT_MODULE else base) for alias in node.names]
    ours = (item for item in found if item[1] == ROOT_MODULE or item[1].startswith(ROOT_MODULE + "."))
    return list(dict.fromkeys(ours))  # ``from x import a, b`` is one import of ``x``


def rule_broken(importer: str, imported: str) -> str | None:
    """Why ``importer`` (a folder) may not import ``imported`` (a folder), or None if it may."""
    if importer == imported:
        return None
    if importer not in LAYER_OF:
        return f"{importer} is in no layer of LAYERS (tests/test_layers.py): add it where it belongs"
    if imported not in LAYER_OF:
        return None  # the root package's own names (``__version__``), or a module of no folder
    below = [folder for layer in LAYERS[: LAYER_OF[importer]] for folder in layer]
    if LAYER_OF[imported] == LAYER_OF[importer]:
        return f"{importer} and {imported} share layer {LAYER_OF[importer]} and may not import each other"
    if LAYER_OF[imported] > LAYER_OF[importer]:
        allowed = ", ".join(below) or "nothing else of the project"
        return (
            f"{importer} (layer {LAYER_OF[importer]}) imports upward, {imported} (layer {LAYER_OF[imported]}); "
            f"it may import {allowed}"
        )
    return None


def arrows_of(path: Path, root: Path = ROOT) -> list[Arrow]:
    module = module_name(path, root)
    importer = folder_of(module)
    if importer is None:
        return []
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    arrows = []
    for line, name in imported_modules(tree, module, is_package=path.name == "__init__.py"):
        imported = folder_of(name)
        rule = None if imported is None else rule_broken(importer, imported)
        if rule is not None:
            arrows.append(Arrow(str(path.relative_to(root)), line, module, name, rule))
    return arrows


def product_modules(root: Path = ROOT) -> list[Path]:
    return sorted(
        path
        for path in root.rglob("*.py")
        if not any(part in NOT_PRODUCT or part.startswith(".") for part in path.relative_to(root).parts)
    )


def all_arrows(root: Path = ROOT) -> list[Arrow]:
    return [arrow for path in product_modules(root) for arrow in arrows_of(path, root)]


def test_every_import_points_down_the_layers() -> None:
    arrows = all_arrows()
    assert not arrows, f"{len(arrows)} imports against the layer order:\n" + "\n".join(map(str, arrows))


def test_every_product_folder_has_a_layer() -> None:
    folders = {folder_of(module_name(path)) for path in product_modules()} - {None}
    assert folders - LAYER_OF.keys() == set(), "add these to LAYERS"
    assert "core" in folders and "services" in folders  # the walk found the product, not an empty tree


def test_an_upward_type_only_import_is_reported(tmp_path: Path) -> None:
    # Given a core module that names a model under TYPE_CHECKING, and an edge that imports another edge in a function
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "thing.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from engineroom.models.job import JobDocument\n"
    )
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "app.py").write_text("def f():\n    import engineroom.scheduler.loop\n")
    (tmp_path / "services").mkdir()
    (tmp_path / "services" / "__init__.py").write_text("from . import x\nfrom engineroom import api\n")
    # When the checker reads them
    arrows = sorted(all_arrows(tmp_path), key=lambda arrow: arrow.path)
    # Then each arrow is named with its rule; a folder's own relative import is not
    assert [(arrow.module, arrow.imported) for arrow in arrows] == [
        ("engineroom.api.app", "engineroom.scheduler.loop"),
        ("engineroom.core.thing", "engineroom.models.job"),
        ("engineroom.services", "engineroom.api"),
    ]
    assert "share layer" in arrows[0].rule and "imports upward" in arrows[1].rule
