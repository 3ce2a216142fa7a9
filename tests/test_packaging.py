"""`pip install .` gives a working package: every sub-package, the dependencies and the command."""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> list[str]:
    names = []
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.append(line.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip().lower())
    return names


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Build from a copy, so the checkout gets no build/ or .egg-info folders.
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "requirements.txt"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "resnet_demo", src / "resnet_demo", ignore=shutil.ignore_patterns("__pycache__", "*.pyi"))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        check=True,
        capture_output=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    (built,) = out.glob("resnet_demo-*.whl")
    return built


def test_wheel_holds_every_module_and_declares_its_dependencies(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(zf.read(meta_name))
        entry_points = zf.read(meta_name.replace("METADATA", "entry_points.txt")).decode()
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "resnet_demo").rglob("*.py")}
    assert any("/" in m.removeprefix("resnet_demo/") for m in modules)  # there are sub-packages to check
    assert modules <= names, sorted(modules - names)
    required = {
        r.split(">")[0].split("=")[0].split("<")[0].split(";")[0].split("[")[0].strip().lower()
        for r in metadata.get_all("Requires-Dist")
    }
    assert {"torch", "torchvision", "gradio", "captum", "plotly"} <= required
    assert set(_requirements()) == required
    assert "resnet-demo = resnet_demo.__main__:main" in entry_points


def test_installed_command_runs(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    command = target / "bin" / "resnet-demo"
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run(
        [sys.executable, str(command), "info", "--json"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert '"resnet152"' in done.stdout and "60192808" in done.stdout.replace(",", "").replace(" ", "")
    # The package that ran is the installed copy, not the checkout.
    where = subprocess.run(
        [sys.executable, "-c", "import resnet_demo.ui, resnet_demo; print(resnet_demo.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(target)
