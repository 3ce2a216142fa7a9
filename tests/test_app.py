"""The app launched in-process on a free port and driven over HTTP with gradio_client (``python app.py``
in a process of its own: tests/test_shutdown.py)."""

from __future__ import annotations

import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from PIL import Image

from resnet_demo.core.weights import load_model
from resnet_demo.explain import Prediction, analyze, prepare
from resnet_demo.ui.analysis_store import ANALYSES, give_back_memory
from resnet_demo.ui.model_choice import resolve_model, untrained_name

from .conftest import EXAMPLES, random_state_dict

PHOTOS = {p.stem: p for p in sorted(EXAMPLES.glob("*.jpg"))}
TOP5_TOLERANCE = 1e-5  # the server's probabilities against the engine's, run again here


def _client(url: str, tmp: Path) -> Client:
    return Client(url, verbose=False, download_files=str(tmp), analytics_enabled=False)


def _explain(client: Client, photo: Path, arch: str = "resnet50", *, checkpoint: Path | None = None) -> tuple:
    weights, ckpt = ("imagenet-v2", None) if checkpoint is None else ("upload", handle_file(str(checkpoint)))
    return client.predict(
        handle_file(str(photo)), arch, weights, ckpt, "layer4", "gradcam", 0.5, "crop", api_name="/explain"
    )


def _assert_top5(label_output: dict, expected: list[Prediction], what: str = "") -> None:
    """``gr.Label``'s answer is the engine's top-5: the same classes in the same order, the same
    probabilities; sorted, each in [0, 1], summing to at most 1."""
    got = [(c["label"], c["confidence"]) for c in label_output["confidences"]]
    assert [label for label, _ in got] == [p.label for p in expected], what
    assert label_output["label"] == expected[0].label, what
    probs = [p for _, p in got]
    assert probs == pytest.approx([p.prob for p in expected], abs=TOP5_TOLERANCE), what
    assert probs == sorted(probs, reverse=True) and all(0.0 <= p <= 1.0 for p in probs), what
    assert sum(probs) <= 1.0 + 1e-6, what


def _pixels_hash(path: str | Path) -> str:
    """The decoded pixels' hash: equal pictures, whatever their file's name or folder."""
    with Image.open(path) as im:
        return hashlib.sha1(np.asarray(im.convert("RGB")).tobytes()).hexdigest()


def test_starts_offline_with_banner(app_url: str, tmp_path: Path) -> None:
    import httpx

    config = httpx.get(app_url.rstrip("/") + "/config", timeout=30).json()
    texts = [str(c.get("props", {}).get("value", "")) for c in config["components"]]
    banner = next(t for t in texts if "Pretrained weights unavailable" in t)
    assert "UNTRAINED" in banner and "resnet50-11ad3fa6.pth" in banner


def test_launched_as_the_command_line_launches_it(app: Any) -> None:
    from resnet_demo.ui import launch_kwargs, parse_args
    from resnet_demo.ui.settings import INFERENCE_LIMIT, MAX_UPLOAD, QUEUE_SIZE

    wanted = launch_kwargs(parse_args([]))
    assert app.show_error is wanted["show_error"] is True  # a handler's sentence reaches the page
    assert wanted["max_file_size"] == MAX_UPLOAD and app.max_file_size == int(MAX_UPLOAD.removesuffix("mb")) * 1024**2
    assert app.css == wanted["css"] and app.theme is wanted["theme"]
    assert app.server_name == wanted["server_name"]
    assert app._queue.max_size == QUEUE_SIZE and app._queue.default_concurrency_limit == INFERENCE_LIMIT


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
        "metrics", "box", "object",
    ]  # fmt: skip
    # Optional, so that old scripts still run: the baseline, then the metric cards' inputs (none by default).
    defaults = [p["parameter_default"] for p in endpoints["/evaluate"]["parameters"][-4:]]
    assert defaults == ["blur", "", "", ""]
    assert len(endpoints["/explain"]["returns"]) == 8


def test_evaluate_endpoint(app_url: str, tmp_path: Path) -> None:
    client = _client(app_url, tmp_path)
    loaded = resolve_model(arch="resnet50", weights="imagenet-v2", checkpoint=None)
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
    loaded = resolve_model(arch=arch, weights="imagenet-v2", checkpoint=None)  # the model the app serves
    expected = analyze(image=PHOTOS["cat"], model=loaded)
    _assert_top5(top5, expected.predictions, arch)
    assert "UNTRAINED" in status and "UNTRAINED" in caption
    assert f"class **{expected.predictions[0].label}**" in caption  # the map explains the top class
    with Image.open(heatmap) as im:
        assert im.size == expected.crop.size  # drawn on the crop the model saw
    with Image.open(strip[0]["image"]) as tile:
        assert tile.size == expected.crop.size
    assert np.load(raw).shape == expected.stage_shapes["layer4"][1:]  # the map before upsampling: 7x7
    assert [tile["caption"].split(" ")[0] for tile in strip] == ["stem", "layer1", "layer2", "layer3", "layer4"]
    assert [Path(tile["image"]).exists() for tile in features] == [True] * 5


def test_predict_endpoint(app_url: str, tmp_path: Path) -> None:
    client = _client(app_url, tmp_path)
    loaded = resolve_model(arch="resnet50", weights="random", checkpoint=None)  # the model the app serves
    for name in ("coffee", "rocket"):
        out = client.predict(handle_file(str(PHOTOS[name])), "resnet50", "random", api_name="/predict")
        # Random weights: every class name says so.
        expected = [
            replace(p, label=untrained_name(name=p.label))
            for p in analyze(image=PHOTOS[name], model=loaded).predictions
        ]
        _assert_top5(out, expected, name)


def test_bad_upload_is_a_sentence_and_server_keeps_serving(app_url: str, tmp_path: Path) -> None:
    client = _client(app_url, tmp_path)
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    with pytest.raises(Exception, match="not an image"):
        _explain(client, bad)
    loaded = resolve_model(arch="resnet50", weights="imagenet-v2", checkpoint=None)
    _assert_top5(_explain(client, PHOTOS["cat"])[0], analyze(image=PHOTOS["cat"], model=loaded).predictions)


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


# ----------------------------------------------------------------------------- visitors' answers kept apart

TELLING_CLASSES = 10


@pytest.fixture(scope="module")
def telling_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ResNet-50 state_dict whose answers depend on the photo, as random weights' do not (two
    example photos got the same top-5 from them): generated weights, and a head of
    :data:`TELLING_CLASSES` classes fitted to the example photos' pooled features, so that
    photo k ranks class 2k first, 2k + 1 second, and so on round. The backbone is stored in float16:
    every /explain with it uploads the file, and this halves it (~47 MB)."""
    path = tmp_path_factory.mktemp("telling") / "telling.pth"
    state = {k: v.half() if v.is_floating_point() else v for k, v in random_state_dict("resnet50", seed=3).items()}
    state["fc.weight"], state["fc.bias"] = torch.zeros(TELLING_CLASSES, 2048), torch.zeros(TELLING_CLASSES)
    torch.save(state, path)
    loaded = load_model(arch="resnet50", weights=str(path))
    pooled: list[torch.Tensor] = []
    hook = loaded.model.fc.register_forward_hook(lambda _m, inputs, _out: pooled.append(inputs[0][0]))
    with torch.no_grad():
        for photo in PHOTOS.values():
            loaded.model(prepare(image=photo, preprocessing=loaded.spec.preprocessing).tensor)
    hook.remove()
    feats = torch.stack(pooled).double()  # (photos, 2048)
    ramp = torch.linspace(4.0, -4.0, TELLING_CLASSES, dtype=torch.float64)
    logits = torch.stack([ramp.roll(2 * k) for k in range(len(PHOTOS))])  # (photos, classes): wanted
    # The least-norm head that gives each photo its logits: the centred features have rank photos - 1.
    weight = (logits - logits.mean(0)).T @ torch.linalg.pinv((feats - feats.mean(0)).T)
    state["fc.weight"] = weight.float()
    state["fc.bias"] = (logits.mean(0) - weight @ feats.mean(0)).float()
    torch.save(state, path)
    return path


def test_concurrent_clients_get_their_own_answers(app_url: str, tmp_path: Path, telling_checkpoint: Path) -> None:
    loaded = load_model(arch="resnet50", weights=str(telling_checkpoint))
    expected = {name: analyze(image=photo, model=loaded).predictions for name, photo in PHOTOS.items()}
    firsts = [preds[0].label for preds in expected.values()]
    assert len(set(firsts)) == len(PHOTOS), f"the weights do not tell the photos apart: {firsts}"

    # One visitor, one photo after another: each photo's answer, and its heat map's pixels.
    first = _client(app_url, tmp_path / "first")
    heat: dict[str, str] = {}
    for name, photo in PHOTOS.items():
        top5, status, _target, heatmap, *_ = _explain(first, photo, checkpoint=telling_checkpoint)
        assert "telling.pth" in status and "UNTRAINED" not in status  # the uploaded weights, not random ones
        _assert_top5(top5, expected[name], name)
        heat[name] = _pixels_hash(heatmap)
    first.close()
    assert len(set(heat.values())) == len(PHOTOS), "two photos gave the same heat map"

    # Ten visitors at once, two per photo in a shuffled order: each gets its own photo's answer.
    jobs = [name for name in PHOTOS for _ in range(2)]
    np.random.default_rng(0).shuffle(jobs)

    def one(job: tuple[int, str]) -> tuple[str, dict, str]:
        i, name = job
        client = _client(app_url, tmp_path / f"visitor{i}")
        out = _explain(client, PHOTOS[name], checkpoint=telling_checkpoint)
        client.close()  # the visitor leaves: the server forgets its analysis
        return name, out[0], _pixels_hash(out[3])

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        results = list(pool.map(one, enumerate(jobs)))
    for name, top5, heat_hash in results:
        _assert_top5(top5, expected[name], name)
        assert heat_hash == heat[name], f"{name}: another photo's heat map"


# ----------------------------------------------------------------------------- a long run


def _rss_mb() -> float:
    give_back_memory()  # collect, and hand freed heap pages back, as the server does after visitors leave
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def _untracked_files(app: Any) -> int:
    """Files in Gradio's cache (this test run's own, see conftest) that the app does not track: its
    sweep never sees them, so any that a request leaves there stay for good."""
    from resnet_demo.ui.temp_files import tracked_files

    tracked = tracked_files(app)
    cache = Path(os.environ["GRADIO_TEMP_DIR"])
    return sum(os.path.join(root, f) not in tracked for root, _dirs, files in os.walk(cache) for f in files)


def _varied_photos(folder: Path, count: int, *, seed: int) -> list[Path]:
    """``count`` photos, every one different: the example photos in turn, each rotated, cropped and
    noised at random, so that every upload and every answer is new content for Gradio's cache."""
    rng = np.random.default_rng(seed)
    bases = [Image.open(p).convert("RGB") for p in PHOTOS.values()]
    photos = []
    for i in range(count):
        photo = bases[i % len(bases)].rotate(float(rng.uniform(-20, 20)), resample=Image.Resampling.BILINEAR)
        w, h = photo.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        pixels = np.asarray(photo.crop((x, y, x + cw, y + ch)), dtype=np.float32)
        noisy = np.clip(pixels + rng.normal(0.0, 4.0, pixels.shape), 0, 255).astype(np.uint8)
        photos.append(folder / f"soak-{i:03d}.jpg")
        Image.fromarray(noisy).save(photos[-1], quality=90)
    assert len({hashlib.sha1(p.read_bytes()).digest() for p in photos}) == count
    return photos


SOAK_SESSIONS = 4
SOAK_WARMUP = 3  # rounds of every session: allocator pools, caches, each session's analyses in the store
SOAK_REQUESTS = 100
# Measured: +2 to +8 MB over 200 requests (0.04 MB a request, RSS noise included). A leak of one
# analysis a request costs 1 MB (idle: the prepared photo) to 15 MB (in use); of one image, 0.15 MB
# (the 224 px crop or its heat map) to 0.7 MB (a decoded example photo): all over this bound.
LEAK_MB_PER_REQUEST = 0.1
SOAK_SLACK_MB = 10.0


@pytest.mark.slow
def test_soak_memory_and_temp_files_stay_flat(app: Any, tmp_path: Path) -> None:
    from resnet_demo.ui.downloads import DOWNLOADS
    from resnet_demo.ui.housekeeping import TIDY_EVERY_S
    from resnet_demo.ui.temp_files import MAX_FILES, MIN_AGE_S, disk_usage

    photos = _varied_photos(tmp_path, SOAK_WARMUP * SOAK_SESSIONS + SOAK_REQUESTS, seed=7)
    warmup, measured = photos[: SOAK_WARMUP * SOAK_SESSIONS], photos[SOAK_WARMUP * SOAK_SESSIONS :]
    # Several visitors, each with a session of its own; they keep no files (downloads cost time), so
    # only the server's are counted.
    clients = [
        Client(app.local_url, verbose=False, download_files=False, analytics_enabled=False)
        for _ in range(SOAK_SESSIONS)
    ]
    # What earlier tests' visitors left (analyses of other models among them) must not go during the
    # measured requests, where its freed memory would hide a leak: it goes now.
    for session in ANALYSES.sessions():
        ANALYSES.drop_session(session)
    for i, photo in enumerate(warmup):
        _explain(clients[i % SOAK_SESSIONS], photo)
    rss0, untracked0 = _rss_mb(), _untracked_files(app)
    peak, trace = 0, []
    for i, photo in enumerate(measured):
        _explain(clients[i % SOAK_SESSIONS], photo)
        if (i + 1) % 20 == 0:
            peak = max(peak, disk_usage(app)[0])
            trace.append((i + 1, round(_rss_mb() - rss0, 1), peak))
    grown = _rss_mb() - rss0
    for client in clients:
        client.close()
    print(f"{SOAK_REQUESTS} requests: memory +{grown:.1f} MB ({grown / SOAK_REQUESTS:.3f} MB a request); "
          f"(requests, MB, files) {trace}")  # fmt: skip
    bound = SOAK_REQUESTS * LEAK_MB_PER_REQUEST + SOAK_SLACK_MB
    assert grown <= bound, f"memory grew by {grown:.0f} MB over {SOAK_REQUESTS} requests (bound {bound:.0f} MB)"

    # Every request left a dozen new files (its upload, the maps, the tiles): the app's own timer
    # sweeps them back under its bound once they are old enough, and none escapes its tracking.
    assert peak > MAX_FILES, f"the load made too few files ({peak}) to test the bound"
    deadline = time.monotonic() + MIN_AGE_S + TIDY_EVERY_S + 10
    while disk_usage(app)[0] > MAX_FILES and time.monotonic() < deadline:
        time.sleep(0.5)
    assert disk_usage(app)[0] <= MAX_FILES, f"{disk_usage(app)[0]} files kept after the sweep (bound {MAX_FILES})"
    left = _untracked_files(app) - untracked0
    assert left <= 2, f"requests left {left} files in Gradio's cache that the app does not track"
    assert len(list(DOWNLOADS.dir.iterdir())) <= DOWNLOADS.keep
