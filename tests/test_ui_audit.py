"""The Audit tab's handlers and wiring, without a browser: the sample set audited, bad uploads refused."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import gradio as gr
import pytest
from PIL import Image

from resnet_demo.ui.audit_handlers import SAMPLE, Audited, run_audit
from resnet_demo.ui.audit_tab import build_audit_tab

from .conftest import SHAPES


def test_tab_handler_on_the_sample_set(finetuned: Path) -> None:
    got = run_audit(SAMPLE, None, "resnet50", "upload", str(finetuned), progress=lambda *a, **k: None)
    assert isinstance(got, Audited)
    assert "24 image(s)" in got.audit_summary and "layer1" in got.audit_summary
    assert [row[0] for row in got.class_table] == list(SHAPES) and all(row[1] == 8 for row in got.class_table)
    summary = json.loads((Path(got.report[0]).parent / "audit.json").read_text())
    assert len(got.clusters) == sum(1 + min(4, cl["size"]) for c in summary["classes"] for cl in c["clusters"])
    assert all(isinstance(image, Image.Image) for image, _ in got.clusters + got.misclassified)
    wrong = sum(cl["misclassified"] for c in summary["classes"] for cl in c["clusters"])
    assert len(got.misclassified) == min(wrong, 24)
    assert got.report[0].endswith("report.html") and zipfile.is_zipfile(got.report[1])


def test_tab_handler_refuses_in_one_sentence(tmp_path: Path, finetuned: Path) -> None:
    with pytest.raises(gr.Error, match="Upload a .zip"):
        run_audit("zip", None, "resnet50", "upload", str(finetuned))
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a/big.png", b"\0" * (8 * 1024**2))
    with pytest.raises(gr.Error, match="zip bomb"):
        run_audit("zip", str(bomb), "resnet50", "upload", str(finetuned))


def test_tab_wires_the_audit_endpoint() -> None:
    with gr.Blocks() as demo:
        build_audit_tab(arch="resnet50", weights="random")
    named = {fn.api_name: fn for fn in demo.fns.values() if fn.api_name and fn.api_visibility != "private"}
    assert set(named) == {"audit"}
    assert named["audit"].concurrency_id == "checks" and len(named["audit"].outputs) == 5


def test_tab_starts_on_the_checkpoint_the_app_started_on(finetuned: Path) -> None:
    with gr.Blocks() as blocks:
        build_audit_tab(arch="resnet50", weights="upload", checkpoint=str(finetuned))
    files = [b for b in blocks.blocks.values() if isinstance(b, gr.File) and "checkpoint" in (b.label or "")]
    assert len(files) == 1 and files[0].visible and files[0].value is not None
