"""Fine-tuning: learning, LR schedule, exact resume, accumulation, AMP, DDP, NaN stop,
cancel and CLI.

Everything runs on CPU at 64 px on a few dozen generated images. The "pretrained"
weights are generated too (the ``pretrained`` fixture in conftest.py), written under
torchvision's file name so the real loading path runs offline.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision

from resnet_demo.core.errors import UserError
from resnet_demo.core.weights import CHECKPOINT_FORMAT, load_model, shared_model
from resnet_demo.finetune import (
    FREEZE_MODES,
    FinetuneConfig,
    TrainEvent,
    TrainingDiverged,
    build_finetune_model,
    finetune,
    forward_backward,
    get_lr,
    optimizer_steps_per_epoch,
    validate_config,
)

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"image_size": 64, "workers": 0, "progress": False}  # learning runs: 64 px crops, no worker processes
TINY = {**SMALL, "image_size": 32}  # runs that check mechanics, not learning: 32 px, the smallest ResNet input


def _record(events: list[TrainEvent]) -> Callable[[TrainEvent], None]:
    return events.append


def _steps(events: list[TrainEvent]) -> list[dict[str, Any]]:
    return [e.data | {"step": e.step} for e in events if e.kind == "step"]


# ----------------------------------------------------------------------------- schedule


def test_get_lr_warms_up_linearly_then_cosine_to_the_floor() -> None:
    kw = {"base_lr": 0.1, "total_steps": 100, "warmup_steps": 10, "min_lr": 0.001}
    lrs = [get_lr(s, **kw) for s in range(101)]
    assert lrs[:10] == pytest.approx([0.1 * (s + 1) / 11 for s in range(10)])
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11], strict=True))  # rising
    assert lrs[10] == pytest.approx(0.1)  # the peak, where cosine starts
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))  # then never rising
    assert lrs[55] == pytest.approx(0.001 + 0.5 * (0.1 - 0.001))  # half way down the cosine
    assert lrs[100] == pytest.approx(0.001) and get_lr(1000, **kw) == pytest.approx(0.001)  # the floor
    assert get_lr(0, base_lr=0.1, total_steps=5, warmup_steps=0, min_lr=0.0) == pytest.approx(0.1)


def test_optimizer_steps_count_the_trailing_accumulation_group() -> None:
    assert optimizer_steps_per_epoch(8, 1) == 8
    assert optimizer_steps_per_epoch(8, 4) == 2
    assert optimizer_steps_per_epoch(9, 4) == 3  # 4 + 4 + 1


# ----------------------------------------------------------------------------- training


@pytest.mark.slow
def test_finetune_learns_and_checkpoint_loads_in_the_explanation_engine(
    sample_data: Path, pretrained: Path, tmp_path: Path
) -> None:
    events: list[TrainEvent] = []
    cfg = FinetuneConfig(
        data=str(sample_data), out=str(tmp_path / "run"), freeze="head", epochs=4, batch_size=8, lr=0.03, **SMALL
    )
    result = finetune(cfg, callback=_record(events))

    steps = _steps(events)
    assert len(steps) == 4 * 9  # 72 images / batch 8, 4 epochs: a few dozen steps
    losses = [s["loss"] for s in steps]
    first, last = sum(losses[:9]) / 9, sum(losses[-9:]) / 9
    assert last < first - 0.15, f"training loss did not fall: {first:.3f} -> {last:.3f}"
    best = max(r["val_top1"] for r in result.metrics)
    assert best >= 60.0, f"validation top-1 {best:.1f}% is not clearly above chance (33%)"
    assert [e.kind for e in events][0] == "start" and events[-1].kind == "done"

    # Files: metrics per epoch, atomic checkpoints (no temporaries left), a summary.
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    for key in ("train_loss", "val_top1", "val_top5", "lr", "images_per_s", "grad_norm"):
        assert all(math.isfinite(r[key]) for r in rows), key
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "best.pth",
        "best.safetensors",
        "last.pth",
        "metrics.jsonl",
        "summary.json",
    ]

    # The checkpoints hold only plain types and load in the weights module and the engine.
    last = torch.load(result.last, map_location="cpu", weights_only=True)
    assert last["format"] == CHECKPOINT_FORMAT and {"optimizer", "scaler", "epoch", "global_step"} <= last.keys()
    loaded = load_model(arch="resnet50", weights=str(result.best))
    assert loaded.spec.categories == ("circle", "square", "triangle") == result.class_names
    assert loaded.spec.preprocessing.crop_size == 64
    assert "optimizer" not in torch.load(result.best, map_location="cpu", weights_only=True)

    from resnet_demo import explain

    image = next((sample_data / "square").iterdir())
    analysis = explain.analyze(image=image, model=shared_model(arch="resnet50", weights=str(result.best)), topk=3)
    assert {p.label for p in analysis.predictions} == {"circle", "square", "triangle"}


def test_resume_continues_exactly_with_accumulation(tiny_data: Path, pretrained: Path, tmp_path: Path) -> None:
    # 18 training images, micro-batch 5 -> 3 micro-batches per epoch, accumulated in
    # groups of 2 -> optimizer steps of 2 + 1 micro-batches, 2 per epoch.
    common = dict(
        data=str(tiny_data),
        freeze="layer4",
        freeze_bn=False,
        epochs=2,
        batch_size=5,
        accum_steps=2,
        lr=0.02,
        warmup_epochs=0.5,
        **TINY,
    )
    straight: list[TrainEvent] = []
    finetune(FinetuneConfig(out=str(tmp_path / "a"), **common), callback=_record(straight))

    stop = threading.Event()
    first: list[TrainEvent] = []

    def stop_after_epoch_one(e: TrainEvent) -> None:
        first.append(e)
        if e.kind == "epoch":
            stop.set()

    halted = finetune(FinetuneConfig(out=str(tmp_path / "b"), **common), callback=stop_after_epoch_one, stop=stop)
    assert halted.cancelled and len(halted.metrics) == 1
    second: list[TrainEvent] = []
    resume = str(tmp_path / "b" / "last.pth")
    finetune(FinetuneConfig(out=str(tmp_path / "b"), resume=resume, **common), callback=_record(second))

    a, b = _steps(straight), _steps(first) + _steps(second)
    assert len(a) == 4 == optimizer_steps_per_epoch(3, 2) * 2
    expected = [get_lr(s, base_lr=0.02, total_steps=4, warmup_steps=1, min_lr=0.02 * 0.01) for s in range(4)]
    assert [s["lr"] for s in a] == pytest.approx(expected, rel=1e-12)
    assert [s["lr"] for s in b] == [s["lr"] for s in a]
    assert [s["step"] for s in b] == [1, 2, 3, 4]
    assert [s["loss"] for s in b] == pytest.approx([s["loss"] for s in a], rel=1e-5)
    final_a = torch.load(tmp_path / "a" / "last.pth", weights_only=True)
    final_b = torch.load(tmp_path / "b" / "last.pth", weights_only=True)
    for k, v in final_a["model"].items():
        torch.testing.assert_close(final_b["model"][k], v, rtol=1e-5, atol=1e-6, msg=k)
    assert final_b["complete"] and len(final_b["metrics"]) == 2


def test_two_accumulated_batches_of_4_give_the_gradient_of_one_batch_of_8(pretrained_state: dict) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet50(num_classes=3)
    model.load_state_dict({k: v for k, v in pretrained_state.items() if not k.startswith("fc.")}, strict=False)
    model.eval()  # BatchNorm in eval mode: otherwise batch statistics differ between 4 and 8
    x, y = torch.randn(8, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    kw = {"criterion": torch.nn.CrossEntropyLoss(label_smoothing=0.1), "amp_dtype": None}
    scaler = torch.amp.GradScaler("cpu", enabled=False)

    forward_backward(model, x, y, scaler=scaler, loss_divisor=1, **kw)
    big = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    for i in (0, 4):
        forward_backward(model, x[i : i + 4], y[i : i + 4], scaler=scaler, loss_divisor=2, **kw)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, big[n], rtol=1e-4, atol=1e-6, msg=n)


def test_best_checkpoint_is_also_written_as_safetensors(tiny_data: Path, pretrained: Path, tmp_path: Path) -> None:
    cfg = FinetuneConfig(data=str(tiny_data), out=str(tmp_path), freeze="head", epochs=1, batch_size=6, **TINY)
    result = finetune(cfg)
    assert result.best == tmp_path / "best.pth" and (tmp_path / "best.safetensors").is_file()
    pth = load_model(arch="resnet50", weights=str(result.best))
    st = load_model(arch="resnet50", weights=str(tmp_path / "best.safetensors"))
    assert st.spec.categories == pth.spec.categories == result.class_names
    assert st.spec.preprocessing == pth.spec.preprocessing and st.spec.preprocessing.crop_size == 32
    theirs = pth.model.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in st.model.state_dict().items())


def test_bfloat16_autocast_on_cpu_runs(tiny_data: Path, pretrained: Path, tmp_path: Path) -> None:
    events: list[TrainEvent] = []
    result = finetune(
        FinetuneConfig(
            data=str(tiny_data), out=str(tmp_path), freeze="layer4", epochs=1, batch_size=6, amp="bf16", **TINY
        ),
        callback=_record(events),
    )
    assert events[0].data["amp"] == "bfloat16"
    assert all(math.isfinite(s["loss"]) for s in _steps(events))
    assert load_model(arch="resnet50", weights=str(result.best)).spec.num_classes == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_cuda_amp_runs(amp: str, tiny_data: Path, pretrained: Path, tmp_path: Path) -> None:
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    events: list[TrainEvent] = []
    result = finetune(
        FinetuneConfig(data=str(tiny_data), out=str(tmp_path), freeze="none", epochs=2, batch_size=6, amp=amp, **TINY),
        callback=_record(events),
    )
    assert events[0].data["amp"] == {"fp16": "float16", "bf16": "bfloat16"}[amp]
    assert all(math.isfinite(s["loss"]) for s in _steps(events))
    scaler = torch.load(result.last, weights_only=True)["scaler"]
    assert bool(scaler) == (amp == "fp16")  # GradScaler only for float16
    assert load_model(arch="resnet50", weights=str(result.best)).spec.num_classes == 3


def test_ctrl_c_leaves_a_usable_checkpoint_and_resume_finishes_the_epoch(
    tiny_data: Path, pretrained: Path, tmp_path: Path
) -> None:
    # (The app's cancel button, the stop event, is tested with the tab below and in the resume test.)
    cfg = FinetuneConfig(data=str(tiny_data), freeze="head", epochs=3, batch_size=4, **TINY)

    def ctrl_c(e: TrainEvent) -> None:
        if e.kind == "step" and e.step == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(FinetuneConfig(**{**cfg.to_dict(), "out": str(tmp_path / "k")}), callback=ctrl_c)
    ckpt = torch.load(tmp_path / "k" / "last.pth", weights_only=True)
    assert (ckpt["epoch"], ckpt["batches_done"], ckpt["global_step"]) == (1, 2, 6)  # 4 micro-batches per epoch
    assert load_model(arch="resnet50", weights=str(tmp_path / "k" / "last.pth")).spec.num_classes == 3

    # Resuming mid-epoch finishes the run with the same number of optimizer steps.
    events: list[TrainEvent] = []
    resumed = FinetuneConfig(
        **{**cfg.to_dict(), "out": str(tmp_path / "k"), "resume": str(tmp_path / "k" / "last.pth")}
    )
    finetune(resumed, callback=_record(events))
    assert [s["step"] for s in _steps(events)] == list(range(7, 13))


def _one_epoch_run(cli: Callable[[list[str]], int], data: Path, out: Path) -> Path:
    """A one-epoch head-only run through the command line, leaving ``out``/last.pth to resume."""
    args = ["finetune", "--data", str(data), "--out", str(out), "--freeze", "head", "--epochs", "1",
            "--batch-size", "6", "--image-size", "32", "--workers", "0", "--no-progress"]  # fmt: skip
    assert cli(args) == 0
    return out


def test_absurd_learning_rate_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(
    tiny_data: Path, pretrained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from resnet_demo.__main__ import main as cli

    out = _one_epoch_run(cli, tiny_data, tmp_path / "run")
    good = (out / "last.pth").read_bytes()

    # Resume takes every option not given from the checkpoint; here two are changed.
    code = cli(
        ["finetune", "--resume", str(out / "last.pth"), "--epochs", "3", "--lr", "1e38", "--clip-grad-norm", "0"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "Training diverged" in err and ("nan" in err or "inf" in err)
    assert f"last good checkpoint, {out / 'last.pth'}" in err
    assert (out / "last.pth").read_bytes() == good  # untouched
    assert load_model(arch="resnet50", weights=str(out / "last.pth")).spec.num_classes == 3
    assert issubclass(TrainingDiverged, UserError)  # what the CLI turned into the message and exit status 2


def test_bad_options_are_user_errors(tiny_data: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="What trains must be head"):
        finetune(FinetuneConfig(data=str(tiny_data), out=str(tmp_path), freeze="all"))
    with pytest.raises(UserError, match="No data"):
        finetune(FinetuneConfig(data=str(tmp_path / "missing"), out=str(tmp_path)))
    with pytest.raises(UserError, match="--amp fp16 needs a CUDA GPU"):
        finetune(FinetuneConfig(data=str(tiny_data), out=str(tmp_path), amp="fp16", device="cpu", weights="random"))
    with pytest.raises(UserError, match="lower the batch size"):
        finetune(FinetuneConfig(data=str(tiny_data), out=str(tmp_path), batch_size=64, weights="random", **TINY))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"arch": "resnet18"}, "The model must be resnet50, resnet101 or resnet152, not 'resnet18'."),
        ({"freeze": "all"}, "What trains must be head (the head only), layer4 (layer4 + head) or none (every layer)"),
        ({"optimizer": "adam"}, "The optimizer must be sgd or adamw, not 'adam'."),
        ({"amp": "fp8"}, "Mixed precision must be auto, fp16, bf16 or off, not 'fp8'."),
        ({"extra_eval": "five-crop"}, "The extra test must be none, ten-crop or multi-scale, not 'five-crop'."),
        ({"epochs": 0}, "Epochs must be at least 1."),
        ({"batch_size": 0}, "The batch size must be at least 1."),
        ({"accum_steps": 0}, "Gradient accumulation must be at least 1 micro-batch per optimizer step."),
        ({"lr": 0.0}, "The learning rate must be above 0"),
        ({"lr": float("nan")}, "The learning rate must be above 0"),
        ({"image_size": 31}, "The image size must be at least 32 pixels"),
        ({"label_smoothing": 1.0}, "Label smoothing must be at least 0 and below 1."),
        ({"clip_grad_norm": -1.0}, "The gradient clipping norm must be 0 (off) or above."),
        ({"warmup_epochs": -0.5}, "Warmup epochs must be 0 or more."),
    ],
)
def test_validate_config_names_the_one_bad_setting_in_words(change: dict[str, Any], message: str) -> None:
    validate_config(FinetuneConfig())  # the defaults pass
    for server in (False, True):
        with pytest.raises(UserError) as caught:
            validate_config(FinetuneConfig(**change), server=server)
        text = str(caught.value)
        assert "--" not in text  # the app shows these messages too: settings in words, never flags
        server_bound = server and ("epochs" in change or "batch_size" in change)  # its own message, tested below
        if not server_bound:
            assert text.startswith(message), text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epochs": 101}, "Epochs must be between 1 and 100."),
        ({"epochs": 0}, "Epochs must be between 1 and 100."),
        ({"batch_size": 257}, "The batch size must be between 1 and 256."),
        ({"batch_size": 0}, "The batch size must be between 1 and 256."),
        ({"lr": 1.5}, "The learning rate must be above 0 and at most 1 (0.01 is a good start for SGD)."),
    ],
)
def test_validate_config_server_bounds_apply_only_on_the_server(change: dict[str, Any], message: str) -> None:
    cfg = FinetuneConfig(**change)
    with pytest.raises(UserError) as caught:
        validate_config(cfg, server=True)
    assert str(caught.value) == message
    if all(v > 0 for v in change.values()):
        validate_config(cfg)  # the command line allows long runs, big batches and any positive rate


def test_validate_config_accepts_every_mode_and_the_server_limits() -> None:
    for freeze in FREEZE_MODES:
        validate_config(FinetuneConfig(freeze=freeze, epochs=100, batch_size=256, lr=1.0), server=True)
        validate_config(FinetuneConfig(freeze=freeze, epochs=1, batch_size=1, lr=1e-6), server=True)


def test_freeze_modes_set_what_trains() -> None:
    for freeze, trains in {"head": {"fc"}, "layer4": {"layer4", "fc"}, "none": None}.items():
        model, _ = build_finetune_model(arch="resnet50", weights="random", num_classes=4, freeze=freeze)
        tops = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
        assert tops == (trains or {n.split(".")[0] for n, _ in model.named_parameters()})
        assert model.fc.out_features == 4


def test_training_model_computes_what_torchvision_computes() -> None:
    # build_finetune_model switches to in-place ReLUs and residual sums for speed;
    # forward and gradients must stay those of torchvision's model.
    torch.manual_seed(0)
    model, _ = build_finetune_model(arch="resnet50", weights="random", num_classes=3, freeze="none")
    reference = torchvision.models.resnet50(num_classes=3)
    reference.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    out, ref = model.train()(x), reference.train()(x)
    torch.testing.assert_close(out, ref)
    out.square().sum().backward()
    ref.square().sum().backward()
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


@pytest.mark.slow
def test_ddp_two_processes_on_cpu_with_gloo(tiny_data: Path, pretrained_state: dict, tmp_path: Path) -> None:
    weights = tmp_path / "init.pth"
    torch.save(pretrained_state, weights)
    data = tmp_path / "data.zip"  # a zip: local rank 0 unpacks it, the other rank waits, both read it
    with zipfile.ZipFile(data, "w") as zf:
        for f in sorted(tiny_data.rglob("*.jpg")):
            zf.write(f, f"shapes/{f.relative_to(tiny_data)}")
    out = tmp_path / "ddp"
    unpacked_before = set(Path(tempfile.gettempdir()).glob("resnet_demo_data_*"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "RESNET_DEMO_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "resnet_demo", "finetune", "--data", str(data), "--out", str(out), "--weights", str(weights),
           "--freeze", "layer4", "--epochs", "1", "--batch-size", "3", "--image-size", "32", "--workers", "0",
           "--no-progress"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("fine-tune resnet50") == 1  # rank 0 alone logs
    assert "2 process(es)" in proc.stderr
    ckpt = torch.load(out / "last.pth", weights_only=True)
    assert ckpt["global_step"] == 3  # 18 images / (3 per batch x 2 processes)
    assert not any(k.startswith("module.") for k in ckpt["model"])  # unwrapped from DDP
    loaded = load_model(arch="resnet50", weights=str(out / "best.pth"))
    assert loaded.spec.categories == ("circle", "square", "triangle")
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert set(Path(tempfile.gettempdir()).glob("resnet_demo_data_*")) == unpacked_before  # the unpacked zip went


# What a resume reads from a last.pth, damaged one field at a time, and the sentence that answers it.
DAMAGED_LAST_PTH = [
    ({"config": {"epochs": "many"}}, "stores the setting 'epochs' as 'many', which is not a whole number"),
    ({"config": {"lr": float("nan")}}, "stores the setting 'lr' as nan, which is not a finite number"),
    ({"config": {"freeze_bn": "yes"}}, "which is not a true/false value or null"),
    ({"epoch": -1}, "its epoch is not a count"),
    ({"best_top1": "best"}, "its best_top1 is not an accuracy"),
    ({"metrics": "rows"}, "its metrics are not a list of rows"),
    ({"optimizer": {"state": {}}}, "The optimizer state in last.pth does not fit this run"),
    ({"model": {"fc.weight": torch.zeros(3, 2048)}}, "The weights in last.pth do not fit a resnet50 of 3 classes"),
]


def test_a_damaged_last_pth_is_one_sentence(
    tiny_data: Path, pretrained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkpoint is input: every field of a last.pth that a resume reads is checked."""
    from resnet_demo.__main__ import main as cli

    out = _one_epoch_run(cli, tiny_data, tmp_path / "run")
    good = torch.load(out / "last.pth", weights_only=True)
    for change, sentence in DAMAGED_LAST_PTH:
        ckpt = dict(good)
        for key, value in change.items():
            ckpt[key] = {**ckpt[key], **value} if key == "config" else value
        torch.save(ckpt, out / "last.pth")
        capsys.readouterr()
        assert cli(["finetune", "--resume", str(out / "last.pth"), "--epochs", "2", "--no-progress"]) == 2, change
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if not line.startswith("warning:")]  # a changed recipe is said too
        assert len(errors) == 1 and sentence in errors[0] and "Traceback" not in err, (change, err)
