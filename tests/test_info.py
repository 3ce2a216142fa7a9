from __future__ import annotations

import json

import pytest

from resnet_demo.__main__ import main
from resnet_demo.core.complexity import arch_report, macs_by_module


@pytest.mark.parametrize(
    ("arch", "params", "gmacs"),
    [("resnet50", 25_557_032, 4.089), ("resnet101", 44_549_160, 7.801), ("resnet152", 60_192_808, 11.514)],
)
def test_measured_figures(arch: str, params: int, gmacs: float) -> None:
    r = arch_report(arch)
    assert r.params == params == r.tv_params
    assert r.gmacs == pytest.approx(gmacs, rel=0.005)
    assert r.gmacs == pytest.approx(r.tv_gmacs, rel=0.005)


def test_macs_scale_with_area_and_split_by_module() -> None:
    full = macs_by_module("resnet50")
    double = macs_by_module("resnet50", image_size=448)  # every feature map exactly 2x per side
    assert double[""] - double["fc"] == 4 * (full[""] - full["fc"])
    assert full["fc"] == 2048 * 1000
    assert sum(full[f"layer{i}"] for i in range(1, 5)) + full["conv1"] + full["fc"] == full[""]


def test_info_json_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["arch"] for r in rows] == ["resnet50", "resnet101", "resnet152"]
    r152 = rows[2]
    assert r152["guide_gmacs"] == 11.6 and round(r152["gmacs"], 2) == 11.51
    assert r152["gmacs_diff_vs_guide"] == pytest.approx(-0.086, abs=0.001)


def test_info_table_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--arch", "resnet101"]) == 0
    out = capsys.readouterr().out
    assert "44,549,160" in out and "7.801" in out and "resnet50 " not in out


def test_info_bad_size_is_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--image-size", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
