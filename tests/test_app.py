"""The app launched in-process on a free port and driven over HTTP with gradio_client."""

from __future__ import annotations

import gc
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from resnet_demo.core.weights import shared_model
from resnet_demo.explain import analyze

from .conftest import EXAMPLES

PHOTOS = {p.stem: p for p in sorted(EXAMPLES.glob("*.jpg"))}


def _client(url: str, tmp: Path) -> Client:
    return Client(url, verbose=False, download_files=str(tmp), analytics_enabled=False)


def _explain(client: Client, photo: Path, arch: str = "resnet50") -> tuple:
    return client.predict(
        handle_file(str(photo)), arch, "imagenet-v2", None, "layer4", "gradcam", 0.5, "crop", api_name="/explain"
    )


def _top_labels(label_output: dict) -> list[str]:
    return [c["label"] for c in label_output["confidences"]]


def test_starts_offline_with_banner(app_url: str, tmp_path: Path) -> None:
    import httpx

    config = httpx.get(app_url.rstrip("/") + "/config", timeout=30).json()
    texts = [str(c.get("props", {}).get("value", "")) for c in config["components"]]
    banner = next(t for t in texts if "Pretrained weights unavailable" in t)
    assert "UNTRAINED" in banner and "resnet50-11ad3fa6.pth" in banner


def test_named_endpoints(app_url: str, tmp_path: Path) -> None:
    client = _client(app_url, tmp_path)
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/explain", "/predict", "/compare", "/evaluate"} <= set(endpoints)

    def params(name: str) -> list[str]:
        return [p["parameter_name"] for p in endpoints[name]["parameters"]]

    # Scripts call these by position: their parameters must not move.
    assert params("/explain") == ["image", "arch", "weights", "checkpoint", "stage", "method", "opacity", "view"]
    assert params("/predict") == ["image", "arch", "weights"]
    assert params("/compare") == ["image", "weights"]
    assert params("/evaluate") == [
        "image", "arch", "weights", "checkpoint", "stage", "method", "target", "versus", "baseline",
    ]  # fmt: skip
    assert endpoints["/evaluate"]["parameters"][-1]["parameter_default"] == "blur"  # optional: old scripts still run
    assert len(endpoints["/explain"]["returns"]) == 8


def test_evaluate_endpoint(app_url: str, tmp_path: Path) -> None:
    client = _client(app_url, tmp_path)
    loaded = shared_model(arch="resnet50", weights="imagenet-v2", fallback_to_random=True)
    second = analyze(image=PHOTOS["cat"], model=loaded).predictions[1]
    out = client.predict(
        handle_file(str(PHOTOS["cat"])), "resnet50", "imagenet-v2", None, "layer4", "gradcam", "", str(second.index),
        "mean", api_name="/evaluate",
    )  # fmt: skip
    assert out["model"]["untrained"] is True
    assert out["map"]["versus"] == second.index and out["map"]["versus_label"] == second.label
    faith = out["faithfulness"]
    assert faith["steps"] == 16 and faith["baseline"] == "mean"
    assert all(0.0 <= faith[k] <= 1.0 for k in faith if k.endswith("_auc"))
    ranked = out["ranking"]["methods"]
    assert [m["score"] for m in ranked] == sorted((m["score"] for m in ranked), reverse=True)
    assert "eigencam" not in {m["method"] for m in ranked}  # it ignores the class: no "versus" map
    assert len(out["sanity"]["steps"]) == 5 and out["sanity"]["verdict"]
    assert out["timings"]["total"] >= out["timings"]["ranking"] > 0
    with pytest.raises(Exception, match="CAM works at layer4 only|layer4"):
        client.predict(
            handle_file(str(PHOTOS["cat"])), "resnet50", "random", None, "layer2", "cam", "", "", api_name="/evaluate"
        )


@pytest.mark.parametrize("arch", ["resnet50", "resnet101", "resnet152"])
def test_explain_each_arch_over_http(app_url: str, tmp_path: Path, arch: str) -> None:
    client = _client(app_url, tmp_path)
    top5, status, _target, heatmap, caption, strip, features, raw = _explain(client, PHOTOS["cat"], arch)
    loaded = shared_model(arch=arch, weights="imagenet-v2", fallback_to_random=True)
    expected = analyze(image=PHOTOS["cat"], model=loaded)
    assert _top_labels(top5) == [p.label for p in expected.predictions]
    assert "UNTRAINED" in status and "UNTRAINED" in caption
    assert Path(heatmap).exists() and Path(raw).suffix == ".npy"
    assert len(strip) == 5 and len(features) == 5


def test_predict_endpoint(app_url: str, tmp_path: Path) -> None:
    client = _client(app_url, tmp_path)
    out = client.predict(handle_file(str(PHOTOS["coffee"])), "resnet50", "random", api_name="/predict")
    assert len(out["confidences"]) == 5


def test_bad_upload_is_a_sentence_and_server_keeps_serving(app_url: str, tmp_path: Path) -> None:
    client = _client(app_url, tmp_path)
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    with pytest.raises(Exception, match="not an image"):
        _explain(client, bad)
    assert len(_explain(client, PHOTOS["cat"])[0]["confidences"]) == 5


def test_concurrent_clients_get_their_own_answers(app_url: str, tmp_path: Path) -> None:
    loaded = shared_model(arch="resnet50", weights="imagenet-v2", fallback_to_random=True)
    expected = {name: [p.label for p in analyze(image=p, model=loaded).predictions] for name, p in PHOTOS.items()}

    def one(name: str) -> tuple[str, list[str]]:
        client = _client(app_url, tmp_path / name)
        return name, _top_labels(_explain(client, PHOTOS[name])[0])

    jobs = [n for n in PHOTOS for _ in range(2)]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        results = list(pool.map(one, jobs))
    for name, labels in results:
        assert labels == expected[name], name


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def _temp_files() -> int:
    """Files the server keeps: Gradio's cache and the app's own downloads folder."""
    from resnet_demo.ui.downloads import DOWNLOADS

    cache = Path(os.environ.get("GRADIO_TEMP_DIR", Path(tempfile.gettempdir()) / "gradio"))
    return sum(len(files) for d in (cache, DOWNLOADS.dir) for _root, _dirs, files in os.walk(d))


@pytest.mark.slow
def test_soak_memory_and_temp_files_stay_flat(app_url: str, tmp_path: Path) -> None:
    # The client keeps no files: only the server's are counted, and downloads cost time.
    client = Client(app_url, verbose=False, download_files=False, analytics_enabled=False)
    photo = PHOTOS["rocket"]
    for _ in range(20):  # warm-up: allocator pools, caches, lazily built state
        _explain(client, photo)
    gc.collect()
    rss0, files0 = _rss_mb(), _temp_files()
    for _ in range(200):
        _explain(client, photo)
    gc.collect()
    rss1, files1 = _rss_mb(), _temp_files()
    assert rss1 <= rss0 * 1.05 + 20, f"memory grew from {rss0:.0f} MB to {rss1:.0f} MB over 200 requests"
    assert files1 - files0 < 20, f"temporary files grew from {files0} to {files1}"


def test_transfer_endpoint(app_url: str, tmp_path: Path) -> None:
    client = _client(app_url, tmp_path)
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    params = [p["parameter_name"] for p in endpoints["/transfer"]["parameters"]]
    assert params == ["image", "task", "model", "backbone", "threshold", "size", "target", "stage"]
    photo = handle_file(str(PHOTOS["cat"]))
    picture, legend, heat, strip, features, summary, menu = client.predict(
        photo, "segment", "fcn", "resnet50", 0.5, 320, None, "layer2", api_name="/transfer"
    )
    assert Path(picture).exists() and Path(heat).exists() and legend.startswith("Classes found:")
    assert [tile["caption"].split(" ")[0] for tile in strip] == ["stem", "layer1", "layer2", "layer3", "layer4"]
    assert len(features) == 5 and "UNTRAINED" in summary and "Backbone = our resnet50" in summary
    # Random detectors find nothing over 0.5: an answer, not an error, and the server keeps serving.
    _, legend, heat, strip, _, summary, _ = client.predict(
        photo, "detect", "retinanet", "resnet50", 0.5, 320, None, "layer4", api_name="/transfer"
    )
    assert legend.startswith("Nothing detected") and heat is None and strip == [] and "Nothing to explain" in summary
    with pytest.raises(Exception, match="published on resnet50 only"):
        client.predict(photo, "detect", "fasterrcnn", "resnet101", 0.5, 320, None, "layer4", api_name="/transfer")
