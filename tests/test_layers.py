"""The layers of docs/architecture.md, checked on the source: which module may import which."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "resnet_demo"
BOTTOM = {"model", "weights", "checkpoint_files", "images", "fold", "devices", "render", "errors", "complexity", "features"}

# area -> project areas and third-party packages it must not import
FORBIDDEN: dict[str, set[str]] = {
    **{m: {"gradio", "plotly", "captum", "explain", "finetune", "data", "diagram", "bench", "slim", "ui"} for m in BOTTOM},
    "explain": {"gradio", "plotly", "finetune", "data", "diagram", "bench", "slim", "ui"},
    "finetune": {"gradio", "captum", "explain", "diagram", "bench", "slim", "ui"},
    "data": {"gradio", "plotly", "captum", "explain", "finetune", "diagram", "bench", "slim", "ui"},
    "diagram": {"gradio", "captum", "explain", "finetune", "data", "bench", "slim", "ui"},
    "slim": {"gradio", "captum", "explain", "diagram", "bench", "ui"},
    "bench": {"gradio", "ui"},
    "transfer": {"gradio", "plotly", "captum", "explain", "finetune", "data", "diagram", "bench", "slim", "ui"},
    "info": {"gradio", "plotly", "captum", "ui"},
}


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
    if path.name == "plots.py" and area in ("finetune", "slim"):
        forbidden = FORBIDDEN[area]  # the training curves, accuracy vs MACs: plotly allowed here only
    else:
        forbidden = FORBIDDEN.get(area, set()) | ({"plotly"} if area in ("finetune", "slim") else set())
    assert not _imports(path) & forbidden, f"{path.name} imports {sorted(_imports(path) & forbidden)}"


def test_the_check_sees_imports() -> None:
    # Guards the checker itself: the app imports gradio, the engine captum, the diagram plotly.
    assert "gradio" in _imports(PACKAGE / "ui" / "demo.py")
    assert "captum" in _imports(PACKAGE / "explain" / "gradcam.py")
    assert "plotly" in _imports(PACKAGE / "diagram" / "theme.py")
    assert "model" in _imports(PACKAGE / "explain" / "network.py")
