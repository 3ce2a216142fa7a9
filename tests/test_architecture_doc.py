"""docs/architecture.md stays true: every file, folder and name it points at exists."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "resnet_demo"
DOC = ROOT / "docs" / "architecture.md"
TEXT = DOC.read_text()
# Code spans and the lines of the layer diagram; templates such as `ui/<name>_tab.py` are skipped.
SPANS = [s for s in re.findall(r"`([^`\n]+)`", TEXT) if "<" not in s]
DIAGRAM = TEXT.split("```")[1]


def _path(token: str) -> Path | None:
    """Where a file or folder named in the doc lives: under the package, or the repository."""
    for base in (PACKAGE, ROOT):
        if (base / token).exists():
            return base / token
    return None


def _files() -> list[str]:
    names = {s for s in SPANS if re.fullmatch(r"[\w/]+\.(py|md)", s)}
    names |= {s.split("::")[0] for s in SPANS if "::" in s}
    return sorted(names)


def _diagram_files() -> list[str]:
    """The diagram names files by their own name (``model.py`` on the core's line, ``explain/plots.py``)."""
    return sorted(set(re.findall(r"(?<![<>\w/])([\w/]+\.py)\b", DIAGRAM)))


def _dotted_names() -> list[tuple[str, str]]:
    """`core/model.check_stage`, `ui/demo.py::build_demo`: a module and a name in it."""
    found = []
    for s in SPANS:
        if "::" in s:
            module, name = s.split("::")
            found.append((module.removesuffix(".py"), name))
        elif (m := re.fullmatch(r"([\w]+(?:/[\w]+)+)\.(\w+)", s)) and m.group(2) not in ("py", "md"):
            found.append((m.group(1), m.group(2)))
    return sorted(set(found))


@pytest.mark.parametrize("name", _files())
def test_every_file_named_exists(name: str) -> None:
    assert _path(name) is not None, f"docs/architecture.md names {name}, which does not exist"


@pytest.mark.parametrize("name", _diagram_files())
def test_every_file_in_the_diagram_exists(name: str) -> None:
    assert _path(name) or list(PACKAGE.rglob(name)), f"the diagram names {name}, which does not exist"


@pytest.mark.parametrize(("module", "name"), _dotted_names())
def test_every_name_it_points_at_exists(module: str, name: str) -> None:
    imported = importlib.import_module("resnet_demo." + module.replace("/", "."))
    assert hasattr(imported, name), f"docs/architecture.md names {module}.{name}, which does not exist"


def test_every_sub_package_and_core_module_is_on_the_map() -> None:
    packages = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
    missing = [p for p in packages if f"{p}/" not in TEXT]
    assert not missing, f"sub-packages not in docs/architecture.md: {missing}"
    core = sorted(p.name for p in (PACKAGE / "core").glob("*.py") if p.name != "__init__.py")
    assert [m for m in core if m not in DIAGRAM] == [], "every core module has its line in the layer diagram"


def test_the_check_sees_names() -> None:
    # Guards the parsing itself: a file, a folder in the diagram, and a module's name.
    assert "core/cam.py" in _files() and "explain/plots.py" in _diagram_files() and "cache.py" in _diagram_files()
    assert ("core/model", "check_stage") in _dotted_names()
    assert _path("no/such_file.py") is None
