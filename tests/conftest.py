"""Shared fixtures. No test may reach the network: downloads are switched off for the
whole run, torch.hub's downloader raises, and sockets may connect to loopback only."""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

# Before anything imports resnet_demo or gradio.
os.environ["RESNET_DEMO_OFFLINE"] = "1"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Gradio's cache of this run's own, not the machine's shared /tmp/gradio: the tests count the files
# the app leaves there, which another run on the same machine must not change.
if "GRADIO_TEMP_DIR" not in os.environ:
    os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="resnet-demo-gradio-")
    atexit.register(shutil.rmtree, os.environ["GRADIO_TEMP_DIR"], ignore_errors=True)
# An empty Hugging Face Hub cache of this run's own: the machine's may hold the named weights, which
# the tests of missing weights must not find (tests that want them there use `hub_cache`).
os.environ["HF_HUB_CACHE"] = tempfile.mkdtemp(prefix="resnet-demo-hf-hub-")
atexit.register(shutil.rmtree, os.environ["HF_HUB_CACHE"], ignore_errors=True)

import pytest  # noqa: E402
import torch  # noqa: E402
import torchvision.models as tvm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _check_address(sock: socket.socket, address: object) -> None:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    host = str(address[0]) if isinstance(address, tuple) else str(address)  # type: ignore[index]
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host.split("%")[0]).is_loopback:
            return
    except ValueError:
        pass
    raise OSError(f"network access is blocked in tests (tried to connect to {host})")


def _guarded_connect(self: socket.socket, address: object) -> None:
    _check_address(self, address)
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    _check_address(self, address)
    return _real_connect_ex(self, address)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(url: str, *args: object, **kwargs: object) -> None:
        raise OSError(f"downloads are blocked in tests ({url})")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torchvision cache; returns its checkpoints folder."""
    from resnet_demo.core.weights import clear_model_cache

    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    clear_model_cache()
    yield home / "hub" / "checkpoints"
    clear_model_cache()


TV_BUILDERS: dict[str, Callable[..., torch.nn.Module]] = {
    "resnet50": tvm.resnet50,
    "resnet101": tvm.resnet101,
    "resnet152": tvm.resnet152,
}


def random_state_dict(arch: str, *, seed: int = 0, num_classes: int = 1000) -> dict[str, torch.Tensor]:
    """torchvision's state_dict for ``arch`` with every tensor random, BN statistics included,
    so that equal outputs mean equal wiring, not lucky defaults."""
    torch.manual_seed(seed)
    sd = TV_BUILDERS[arch](num_classes=num_classes).state_dict()
    g = torch.Generator().manual_seed(seed + 1)
    for k, v in sd.items():
        if k.endswith("running_var"):
            sd[k] = torch.rand(v.shape, generator=g) + 0.5
        elif k.endswith("running_mean") or (k.endswith(".bias") and "bn" in k) or "downsample.1.bias" in k:
            sd[k] = torch.randn(v.shape, generator=g) * 0.1
        elif k.endswith(".weight") and ("bn" in k or "downsample.1" in k):
            sd[k] = torch.rand(v.shape, generator=g) * 0.5 + 0.75
    return sd


@pytest.fixture
def fake_pretrained(torch_home: Path) -> Callable[..., Path]:
    """Write a generated state_dict under torchvision's official file name for a weights entry."""
    from resnet_demo.core.weights import cache_path, weights_spec

    def write(arch: str = "resnet50", weights: str = "imagenet-v2", *, seed: int = 0, state_dict=None) -> Path:
        path = cache_path(weights_spec(arch=arch, weights=weights))
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(random_state_dict(arch, seed=seed) if state_dict is None else state_dict, path)
        return path

    return write


HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, torch_home: Path) -> Callable[..., Path]:
    """An empty Hugging Face Hub cache (and an empty torchvision cache); returns a writer that puts a
    state_dict in it as ``model.safetensors`` of a repo, laid out as huggingface_hub lays it out: the
    file in ``blobs/<sha256>``, ``snapshots/<commit>/model.safetensors`` a link to it, ``refs/main``
    naming the commit."""
    import hashlib

    import huggingface_hub.constants
    from safetensors.torch import save

    cache = tmp_path / "hf_home" / "hub"
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    # huggingface_hub reads the variables once, when imported: the running process needs its constant set too.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))

    def write(repo: str, state_dict: dict[str, torch.Tensor]) -> Path:
        folder = cache / f"models--{repo.replace('/', '--')}"
        data = save(state_dict, metadata={"format": "pt"})
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = folder / "snapshots" / HUB_COMMIT / "model.safetensors"
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
        (folder / "refs").mkdir(exist_ok=True)
        (folder / "refs" / "main").write_text(HUB_COMMIT)
        return link

    return write


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen, *, sig: int = signal.SIGINT, timeout_s: float = 60.0) -> int:
    """Stop ``proc`` with ``sig`` (Ctrl-C by default), killing it after ``timeout_s``; its exit status."""
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


@contextlib.contextmanager
def app_py(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, timeout_s: float = 180.0
) -> Iterator[tuple[subprocess.Popen, str, Path]]:
    """``python app.py --port P *args`` in a process of its own: offline on an empty weights cache
    (random weights, marked UNTRAINED), Gradio's cache in ``tmp_path / "gradio"``, ``env`` added to
    the environment. Yields the process, its URL and its log once ``launch()`` is past its own check
    of the page; stops it (Ctrl-C) on leaving unless the test already has."""
    import httpx

    port = free_port()
    env = {
        **os.environ,  # offline, no analytics: this file's settings
        "TORCH_HOME": str(tmp_path / "torch_home"),
        "GRADIO_TEMP_DIR": str(tmp_path / "gradio"),
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    env.pop("GRADIO_SERVER_NAME", None)  # the command line's own default host
    log = tmp_path / "app.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "app.py", "--port", str(port), *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout_s
        while "To create a public link" not in log.read_text():  # Gradio prints the share hint then
            assert proc.poll() is None, f"app.py stopped with status {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"app.py did not start in {timeout_s:.0f} s:\n{log.read_text()}"
            time.sleep(0.2)
        assert httpx.get(url + "config", timeout=10).status_code == 200
        yield proc, url, log
    finally:
        if proc.poll() is None:
            stop(proc)


@pytest.fixture(scope="session")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The whole app (its ``gr.Blocks``, launched) on an empty, offline weights cache: it must
    start and serve random weights.

    Built, queued and launched as ``python app.py`` does it (:func:`resnet_demo.ui.parse_args`,
    ``build_demo`` and :func:`resnet_demo.ui.ready_to_launch`, which ``main`` calls), on a free
    port and without blocking this thread: the only differences.
    """
    home = tmp_path_factory.mktemp("torch_home")
    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(home)
    from resnet_demo.core.weights import clear_model_cache
    from resnet_demo.ui import build_demo, parse_args, ready_to_launch

    clear_model_cache()
    args = parse_args(["--port", str(free_port())])
    demo = build_demo(arch=args.arch, weights=args.weights, device=args.device, time_budget_s=args.time_budget)
    demo.launch(**ready_to_launch(demo, args), prevent_thread_lock=True, quiet=True)
    try:
        yield demo
    finally:
        demo.close()
        clear_model_cache()
        if old is None:
            os.environ.pop("TORCH_HOME", None)
        else:
            os.environ["TORCH_HOME"] = old


@pytest.fixture(scope="session")
def app_url(app: object) -> str:
    """The URL of :func:`app`."""
    return app.local_url  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- fine-tune data


@pytest.fixture(scope="module")
def sample_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 30 images of 72 px: 72 training and 18 validation images."""
    from resnet_demo.data import make_sample_dataset

    return make_sample_dataset(tmp_path_factory.mktemp("shapes"), num_classes=3, images_per_class=30, image_size=72)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 8 images, with train/ and val/ folders: 18 training images."""
    from resnet_demo.data import make_sample_dataset

    root = tmp_path_factory.mktemp("tiny")
    return make_sample_dataset(root, num_classes=3, images_per_class=8, image_size=72, val_fraction=0.25, seed=3)


@pytest.fixture(scope="module")
def pretrained_state(sample_data: Path) -> dict[str, torch.Tensor]:
    """A stand-in for ImageNet weights whose features are usable without downloading any.

    Fully random ResNet-50 features drown the colour signal in 16 random blocks. With
    every residual branch zeroed (zero_init_residual) each block passes its shortcut,
    so the features are a few random projections of the input, and BatchNorm statistics
    measured on real images keep them normalised, like trained weights would.
    """
    from resnet_demo.data import eval_transform, load_image_set, open_rgb

    torch.manual_seed(0)
    model = tvm.resnet50(zero_init_residual=True)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration batch
    tf = eval_transform(crop_size=64, resize_size=73, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    images = load_image_set(sample_data)
    x = torch.stack([tf(open_rgb(p)) for p, _ in images.train[:32]])  # (32, 3, 64, 64)
    model.train()
    with torch.no_grad():
        model(x)
    return model.state_dict()


@pytest.fixture
def pretrained(fake_pretrained: Callable[..., Path], pretrained_state: dict[str, torch.Tensor]) -> Path:
    return fake_pretrained("resnet50", "imagenet-v2", state_dict=pretrained_state)


# ----------------------------------------------------------------------------- checkpoints to slim

SHAPES = ("circle", "square", "triangle")  # the classes of a 3-class sample set


def save_checkpoint(model: torch.nn.Module, path: Path, *, classes: tuple[str, ...] = SHAPES, crop: int = 64) -> Path:
    """``model`` saved at ``path`` as this project's fine-tune checkpoint: class names, and the
    preprocessing of a run at ``crop`` px."""
    from resnet_demo.core.weights import Preprocessing
    from resnet_demo.finetune import FinetuneConfig
    from resnet_demo.finetune.checkpoints import Progress, atomic_save, make_checkpoint

    ckpt = make_checkpoint(
        cfg=FinetuneConfig(arch="resnet50"),
        class_names=classes,
        model=model,
        preprocessing=Preprocessing(resize_size=crop * 256 // 224, crop_size=crop),
        progress=Progress(),
        total_steps=0,
        val_top1=None,
    )
    atomic_save(ckpt, path)
    return path


@pytest.fixture(scope="session")
def finetuned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A "fine-tuned" ResNet-50 checkpoint, ``shapes.pth``, of the sample sets' three classes at
    32 px (generated weights, a small random head): the model to slim."""
    from resnet_demo.core.model import build_model

    model = build_model("resnet50", num_classes=len(SHAPES))
    state = random_state_dict("resnet50", seed=6)
    state["fc.weight"], state["fc.bias"] = torch.randn(len(SHAPES), 2048) * 0.05, torch.zeros(len(SHAPES))
    model.load_state_dict(state)
    return save_checkpoint(model, tmp_path_factory.mktemp("finetuned") / "shapes.pth", crop=32)


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """The app launched by :func:`app` with another time limit per request (0: none, as ``--time-budget 0``)."""
    from resnet_demo.ui.budget import BUDGET

    old = BUDGET.seconds
    BUDGET.seconds = seconds
    try:
        yield
    finally:
        BUDGET.seconds = old


@pytest.fixture
def no_time_limit() -> Iterator[None]:
    """The app without its time limit per request, as ``python app.py --time-budget 0`` runs it."""
    with time_limit(0.0):
        yield
