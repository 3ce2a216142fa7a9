"""The layers of docs/architecture.md, checked on the source: which module may import which."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "resnet_demo"
AREAS = {"core", "explain", "finetune", "data", "diagram", "slim", "transfer", "audit", "bench", "ui", "info"}

# area -> project areas and third-party packages it must not import
FORBIDDEN: dict[str, set[str]] = {
    "core": {
        "gradio",
        "plotly",
        "captum",
        "explain",
        "finetune",
        "data",
        "diagram",
        "transfer",
        "bench",
        "slim",
        "audit",
        "ui",
        "info",
    },
    "explain": {"gradio", "plotly", "finetune", "data", "diagram", "transfer", "bench", "slim", "audit", "ui"},
    "finetune": {"gradio", "captum", "explain", "diagram", "bench", "slim", "audit", "ui"},
    "data": {"gradio", "plotly", "captum", "explain", "finetune", "diagram", "bench", "slim", "audit", "ui"},
    "diagram": {"gradio", "captum", "explain", "finetune", "data", "bench", "slim", "audit", "ui"},
    "slim": {"gradio", "captum", "explain", "diagram", "bench", "ui", "audit"},
    "audit": {"gradio", "plotly", "finetune", "diagram", "transfer", "bench", "slim", "ui"},
    "bench": {"gradio", "ui"},
    "transfer": {
        "gradio",
        "plotly",
        "captum",
        "explain",
        "finetune",
        "data",
        "diagram",
        "bench",
        "slim",
        "audit",
        "ui",
    },
    "info": {"gradio", "plotly", "captum", "audit", "ui"},
    "ui": set(),
}
# An engine draws its figures in its own plots.py: plotly and the shared diagram theme are allowed there only.
PLOTS_MAY_IMPORT = {"plotly", "diagram"}
ENGINES_WITH_PLOTS = {"explain", "finetune", "slim"}


def _area(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _imports(path: Path) -> set[str]:
    """First names of what ``path`` imports: third-party packages, and project areas (``explain``, ``model``)."""
    found: set[str] = set()
    depth = len(path.relative_to(PACKAGE).parts) - 1  # 0 for resnet_demo/x.py, 1 for resnet_demo/pkg/x.py
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                found.add(parts[1] if parts[0] == "resnet_demo" and len(parts) > 1 else parts[0])
        elif isinstance(node, ast.ImportFrom):
            module = (node.module or "").split(".")
            if node.level == 0:
                found.add(module[1] if module[0] == "resnet_demo" and len(module) > 1 else module[0])
            elif node.level > depth:  # leaves its sub-package: names a project area
                names = [module[0]] if module[0] else [a.name for a in node.names]
                found.update(names)
    return found


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_imports_only_from_its_layer_or_below(path: Path) -> None:
    area = _area(path)
    forbidden = FORBIDDEN.get(area, set()) | ({"plotly"} if area in ENGINES_WITH_PLOTS else set())
    if path.name == "plots.py" and area in ENGINES_WITH_PLOTS:
        forbidden = forbidden - PLOTS_MAY_IMPORT
    if path.name == "cli.py" or path.name.endswith("_cli.py"):
        # A command sits on top of the engines, like the app: it may call any of them, never the app.
        forbidden = {"gradio", "ui"}
    assert not _imports(path) & forbidden, f"{path.name} imports {sorted(_imports(path) & forbidden)}"


def test_the_check_sees_imports() -> None:
    # Guards the checker itself: the app imports gradio, the engine captum, the diagram plotly.
    assert "gradio" in _imports(PACKAGE / "ui" / "demo.py")
    assert "captum" in _imports(PACKAGE / "explain" / "captum_methods.py")
    assert "plotly" in _imports(PACKAGE / "diagram" / "theme.py")
    assert "core" in _imports(PACKAGE / "explain" / "network.py")
    assert {"plotly", "diagram"} <= _imports(PACKAGE / "explain" / "plots.py")


def test_every_module_belongs_to_an_area_of_the_table() -> None:
    # A new top-level module must be placed in the table (and docs/architecture.md) on purpose.
    loose = {_area(p) for p in PACKAGE.rglob("*.py")} - AREAS - {"__init__", "__main__"}
    assert not loose, f"modules outside every area: {sorted(loose)}"
    assert set(FORBIDDEN) == AREAS
