"""Slim: structured channel pruning, knowledge distillation, checkpoints that record their
widths, the diagram of a pruned model, the report, and a small run end to end.

Models run at 32-64 px; the training runs use a few generated images and one epoch.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from resnet_demo.__main__ import main as cli_main
from resnet_demo.core.complexity import model_complexity
from resnet_demo.core.errors import UserError
from resnet_demo.core.model import ARCH_DEPTHS, ResNet, build_model, standard_widths
from resnet_demo.core.weights import WeightsError, load_model, shared_model
from resnet_demo.data import make_sample_dataset
from resnet_demo.diagram import architecture_figure, block_figure, stage_table
from resnet_demo.explain import analyze
from resnet_demo.finetune import (
    DistillationLoss,
    FinetuneConfig,
    TrainEvent,
    forward_backward,
    kd_loss,
    validate_config,
)
from resnet_demo.slim import SlimConfig, plan_pruning, prune_model, slim

from .conftest import SHAPES, random_state_dict, save_checkpoint

CAT = Path(__file__).resolve().parents[1] / "examples" / "cat.jpg"
RUN = {"image_size": 32, "workers": 0, "progress": False, "batch_size": 4, "epochs": 1, "latency_repeats": 1}


@pytest.fixture(scope="module")
def r50() -> ResNet:
    """ResNet-50 on generated weights with random BN scales and statistics, in eval mode."""
    model = build_model("resnet50")
    model.load_state_dict(random_state_dict("resnet50", seed=0))
    return model.eval()


def _x(size: int = 64, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(5))  # (n, 3, size, size)


# ----------------------------------------------------------------------------- closed-form counts


def _out(h: int, k: int, s: int, p: int) -> int:
    return (h + 2 * p - k) // s + 1


def closed_form(arch: str, widths: list[tuple[int, int]], *, num_classes: int, image_size: int) -> tuple[int, int]:
    """(params, MACs) of a ResNet with these inner widths, counted by hand from the paper's table."""
    h = _out(image_size, 7, 2, 3)
    params, macs = 3 * 64 * 49 + 2 * 64, 3 * 64 * 49 * h * h
    h = _out(h, 3, 2, 1)
    inplanes, i = 64, 0
    for stage, (planes, depth) in enumerate(zip((64, 128, 256, 512), ARCH_DEPTHS[arch], strict=True)):
        out = planes * 4
        for b in range(depth):
            w1, w2 = widths[i]
            stride = 2 if stage > 0 and b == 0 else 1
            h2 = _out(h, 3, stride, 1)
            params += inplanes * w1 + 2 * w1 + w1 * w2 * 9 + 2 * w2 + w2 * out + 2 * out
            macs += inplanes * w1 * h * h + w1 * w2 * 9 * h2 * h2 + w2 * out * h2 * h2
            if b == 0:  # the projection shortcut
                params += inplanes * out + 2 * out
                macs += inplanes * out * h2 * h2
            inplanes, h, i = out, h2, i + 1
    return params + 2048 * num_classes + num_classes, macs + 2048 * num_classes


def test_closed_form_matches_the_published_resnet50() -> None:
    # Guards the hand count itself: torchvision's published figures for the standard widths.
    assert closed_form("resnet50", list(standard_widths("resnet50")), num_classes=1000, image_size=224) == (
        25_557_032,
        4_089_184_256,
    )


# ----------------------------------------------------------------------------- pruning


@pytest.mark.parametrize("criterion", ["bn-scale", "l1"])
def test_pruning_nothing_leaves_outputs_unchanged_and_the_source_untouched(r50: ResNet, criterion: str) -> None:
    before = {k: v.clone() for k, v in r50.state_dict().items()}
    same = prune_model(r50, fraction=0.0, criterion=criterion)
    x = _x()
    with torch.no_grad():
        assert torch.equal(same(x), r50(x))
    assert same.widths() == standard_widths("resnet50")
    assert all(torch.equal(before[k], v) for k, v in r50.state_dict().items())
    # New storage: training the copy can never change the (possibly shared) source.
    assert same.conv1.weight.data_ptr() != r50.conv1.weight.data_ptr()


@pytest.mark.parametrize(("fraction", "criterion"), [(0.3, "bn-scale"), (0.5, "l1"), (0.9, "bn-scale")])
def test_pruning_removes_round_p_width_per_layer_and_counts_match_the_closed_form(
    r50: ResNet, fraction: float, criterion: str
) -> None:
    pruned = prune_model(r50, fraction=fraction, criterion=criterion)
    expected = [(a - round(fraction * a), b - round(fraction * b)) for a, b in standard_widths("resnet50")]
    assert list(pruned.widths()) == expected
    for block, (w1, w2) in zip([b for s in pruned.stages.values() for b in s], expected, strict=True):
        assert block.conv1.weight.shape[0] == w1 and block.bn1.weight.shape == (w1,)  # real, smaller tensors
        assert block.conv2.weight.shape[:2] == (w2, w1) and block.conv3.weight.shape[1] == w2
    for size in (64, 224):
        counted = model_complexity(pruned, image_size=size)
        assert counted == closed_form("resnet50", expected, num_classes=1000, image_size=size)
    assert sum(p.numel() for p in pruned.parameters()) == counted[0]
    with torch.no_grad():
        assert pruned(_x(32)).shape == (2, 1000)


def test_skipped_stages_keep_their_widths_and_round_to_gives_multiples(r50: ResNet) -> None:
    pruned = prune_model(r50, fraction=0.3, criterion="l1", skip=("layer1", "layer4"), round_to=8)
    standard = standard_widths("resnet50")
    for (name, stage), start in zip(pruned.stages.items(), (0, 3, 7, 13), strict=True):
        for i, block in enumerate(stage):
            w = (block.conv1.out_channels, block.conv2.out_channels)
            if name in ("layer1", "layer4"):
                assert w == standard[start + i]
            else:
                full = standard[start + i][0]
                assert all(v % 8 == 0 and full - round(0.3 * full) <= v < full for v in w)


def _zero_channels(model: ResNet, fraction: float, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Zero round(fraction * width) random inner channels of every block (filter, BN scale and
    shift), so they output exactly 0; returns the channels left alive."""
    g = torch.Generator().manual_seed(seed)
    alive = {}
    with torch.no_grad():
        for name, stage in model.stages.items():
            for i, block in enumerate(stage):
                kept = []
                for conv, bn in ((block.conv1, block.bn1), (block.conv2, block.bn2)):
                    width = conv.out_channels
                    dead = torch.randperm(width, generator=g)[: round(fraction * width)]
                    for t in (conv.weight, bn.weight, bn.bias):
                        t[dead] = 0
                    mask = torch.ones(width, dtype=torch.bool)
                    mask[dead] = False
                    kept.append(mask.nonzero().flatten())
                alive[f"{name}.{i}"] = (kept[0], kept[1])
    return alive


@pytest.mark.parametrize("criterion", ["bn-scale", "l1"])
def test_pruned_model_equals_the_unpruned_one_when_pruned_channels_carry_zero(criterion: str) -> None:
    model = build_model("resnet50")
    model.load_state_dict(random_state_dict("resnet50", seed=2))
    model.eval()
    alive = _zero_channels(model, 0.4, seed=3)
    plan = plan_pruning(model, fraction=0.4, criterion=criterion)
    assert all(torch.equal(plan.keep[k][j], alive[k][j]) for k in alive for j in (0, 1))  # the right channels
    pruned = prune_model(model, fraction=0.4, criterion=criterion)
    x = _x(64)
    with torch.no_grad():
        full, small = model(x), pruned(x)
    assert full.abs().max() > 1e-3  # a real signal, not a vanishing one
    torch.testing.assert_close(small, full, rtol=1e-4, atol=1e-5)  # and the rest of the wiring is intact


@pytest.mark.parametrize("fraction", [-0.1, 0.95, float("nan")])
def test_a_prune_fraction_outside_0_to_0_9_is_one_clear_sentence(r50: ResNet, fraction: float) -> None:
    with pytest.raises(UserError, match=r"^The pruning fraction must be from 0 to 0\.9, not (-0\.1|0\.95|nan)\.$"):
        prune_model(r50, fraction=fraction, criterion="bn-scale")


def test_unknown_criterion_and_stage_are_refused(r50: ResNet) -> None:
    with pytest.raises(UserError, match="criterion must be bn-scale or l1"):
        prune_model(r50, fraction=0.3, criterion="random")
    with pytest.raises(UserError, match="Stages to skip"):
        prune_model(r50, fraction=0.3, criterion="l1", skip=("stem",))


# ----------------------------------------------------------------------------- distillation


def test_kd_loss_equals_the_formula_on_fixed_logits() -> None:
    s = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    t = torch.tensor([[1.0, 0.0, 2.0], [-1.0, 2.5, 0.5]])
    y = torch.tensor([2, 1])
    ce = nn.CrossEntropyLoss(label_smoothing=0.1)
    T, A = 4.0, 0.3
    p_t, p_s = (t / T).softmax(1), (s / T).softmax(1)
    kl = (p_t * (p_t.log() - p_s.log())).sum() / 2  # summed over classes, averaged over the batch
    expected = A * T * T * kl + (1 - A) * ce(s, y)
    assert kd_loss(s, t, y, temperature=T, alpha=A, criterion=ce) == pytest.approx(float(expected), rel=1e-6)
    assert DistillationLoss(ce, temperature=T, alpha=A)(s, y, t) == pytest.approx(float(expected), rel=1e-6)
    # alpha 0: exactly the fine-tune loss; alpha 1: the labels play no part.
    assert torch.equal(kd_loss(s, t, y, temperature=T, alpha=0.0, criterion=ce), ce(s, y))
    other = kd_loss(s, t, torch.tensor([0, 0]), temperature=T, alpha=1.0, criterion=ce)
    assert other == pytest.approx(float(T * T * kl), rel=1e-6)


def test_forward_backward_with_a_teacher_trains_the_student_only() -> None:
    torch.manual_seed(0)
    student, teacher = ResNet((1, 1, 1, 1), num_classes=4), ResNet((1, 1, 1, 1), num_classes=4).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    x, y = _x(32, n=4), torch.tensor([0, 1, 2, 3])
    kd = DistillationLoss(nn.CrossEntropyLoss(), temperature=2.0, alpha=0.7)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    loss, logits = forward_backward(
        student, x, y, criterion=kd, amp_dtype=None, scaler=scaler, loss_divisor=1, teacher=teacher
    )
    with torch.no_grad():
        expected = kd(student(x), y, teacher(x))
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(teacher_state[k], v) for k, v in teacher.state_dict().items())  # BN stats untouched


def test_distillation_settings_are_checked() -> None:
    with pytest.raises(UserError, match="temperature must be above 0"):
        validate_config(FinetuneConfig(data="d", kd_temperature=0.0))
    with pytest.raises(UserError, match=r"weight \(alpha\) must be from 0 to 1"):
        validate_config(FinetuneConfig(data="d", kd_alpha=1.5))


# ----------------------------------------------------------------------------- checkpoints, explain, diagram


@pytest.fixture(scope="module")
def pruned3(tmp_path_factory: pytest.TempPathFactory) -> tuple[ResNet, Path]:
    """A 3-class ResNet-50 pruned 65% by bn-scale, saved as a checkpoint with its class names."""
    model = build_model("resnet50", num_classes=3)
    state = random_state_dict("resnet50", seed=4)
    state["fc.weight"], state["fc.bias"] = torch.randn(3, 2048) * 0.05, torch.zeros(3)
    model.load_state_dict(state)
    pruned = prune_model(model.eval(), fraction=0.65, criterion="bn-scale")
    return pruned, save_checkpoint(pruned, tmp_path_factory.mktemp("ckpt") / "slim.pth")


def test_pruned_checkpoint_round_trip_through_weights_and_explain(pruned3: tuple[ResNet, Path]) -> None:
    pruned, path = pruned3
    raw = torch.load(path, weights_only=True)  # plain data: lists of ints, tensors
    assert raw["widths"] == [list(w) for w in pruned.widths()]
    loaded = load_model(arch="resnet50", weights=str(path))
    assert loaded.model.widths() == pruned.widths() == loaded.spec.widths
    assert loaded.spec.categories == SHAPES
    x = _x(64)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), pruned(x))
    analysis = analyze(image=CAT, model=shared_model(arch="resnet50", weights=str(path)), gradcam_stages=("layer3",))
    assert {p.label for p in analysis.predictions} == set(SHAPES)
    assert sum(p.prob for p in analysis.predictions) == pytest.approx(1.0, abs=1e-5)
    heat = analysis.attribution(stage="layer3", target=analysis.predictions[0].index).raw
    assert np.isfinite(heat).all() and heat.max() >= 0


def test_the_diagram_draws_the_slimmer_widths(pruned3: tuple[ResNet, Path]) -> None:
    pruned, _ = pruned3
    widths = pruned.widths()
    w1, w2 = widths[7]  # layer3.0
    fig = architecture_figure(arch="resnet50", widths=widths)
    hover = next(t for t in fig.data if t.name == "bottleneck blocks").hovertext
    layer30 = next(h for h in hover if h.startswith("<b>layer3.0</b>"))
    assert f"conv widths 512 → {w1} → {w2} → 1024" in layer30
    params, macs = closed_form("resnet50", list(widths), num_classes=1000, image_size=224)
    total = stage_table(arch="resnet50", widths=widths)[-1]
    assert (total["params"], total["macs"]) == (params, macs)
    assert total["params"] < stage_table(arch="resnet50")[-1]["params"]
    inside = block_figure(arch="resnet50", block="layer3.0", widths=widths)
    labels = " ".join(" ".join(t.text) for t in inside.data if t.text is not None)
    assert f"512 → {w1}" in labels and f"{w1} → {w2}" in labels and f"{w2} → 1024" in labels
    # The standard widths, written out, draw exactly the standard figure.
    assert architecture_figure(arch="resnet50", widths=standard_widths("resnet50")) == architecture_figure(
        arch="resnet50"
    )


@pytest.mark.parametrize(
    ("widths", "problem"),
    [
        ([[10, 10]] * 15, "one pair per block (16 for resnet50), not 15 entries"),
        ([[10, 10]] * 15 + [[10, 1000]], "layer4.2 must be two integers from 1 to 512"),
        ([[0, 10]] + [[10, 10]] * 15, "layer1.0 must be two integers from 1 to 64"),
        ([[True, 10]] + [[10, 10]] * 15, "layer1.0 must be two integers"),
        ([[10.0, 10]] + [[10, 10]] * 15, "layer1.0 must be two integers"),
        ("wide", "one pair per block"),
    ],
)
def test_bad_widths_in_a_checkpoint_are_one_clear_sentence(
    pruned3: tuple[ResNet, Path], tmp_path: Path, widths: object, problem: str
) -> None:
    ckpt = torch.load(pruned3[1], weights_only=True)
    ckpt["widths"] = widths
    path = tmp_path / "bad.pth"
    torch.save(ckpt, path)
    with pytest.raises(WeightsError) as e:
        load_model(arch="resnet50", weights=str(path))
    message = str(e.value)
    assert message.startswith("bad.pth is not a usable fine-tune checkpoint: ") and message.endswith(".")
    assert problem in message and str(tmp_path) not in message and message.count(". ") == 0


# ----------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def slim_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample_dataset(tmp_path_factory.mktemp("slimdata"), num_classes=3, images_per_class=8, image_size=40)


def test_a_small_cpu_run_ends_with_a_smaller_working_model(slim_data: Path, finetuned: Path, tmp_path: Path) -> None:
    events: list[TrainEvent] = []
    cfg = SlimConfig(data=str(slim_data), weights=str(finetuned), out=str(tmp_path / "out"), prune=0.5,
                     distill_from=str(finetuned), **RUN)  # fmt: skip
    result = slim(cfg, callback=events.append)
    assert result.report is not None and result.finetune.best is not None
    assert {e.kind for e in events} >= {"start", "step", "epoch", "done"}
    after = load_model(arch="resnet50", weights=str(result.finetune.best))
    before = load_model(arch="resnet50", weights=str(finetuned))
    assert after.spec.categories == before.spec.categories
    # The same slim model as safetensors: its widths travel in the file's metadata.
    same = load_model(arch="resnet50", weights=str(result.finetune.best.with_suffix(".safetensors")))
    assert same.spec.widths == after.spec.widths and same.model.widths() == after.model.widths()
    assert model_complexity(after.model)[0] < 0.6 * model_complexity(before.model)[0]
    with torch.no_grad():
        probs = after.model(_x(32)).softmax(1)
    assert probs.shape == (2, 3) and probs.isfinite().all()
    report = json.loads((tmp_path / "out" / "slim.json").read_text())
    rows = {r["name"]: r for r in report["rows"]}
    assert set(rows) == {"original", "pruned", "slim"}
    assert rows["slim"]["params"] == model_complexity(after.model)[0]
    assert rows["slim"]["macs"] == model_complexity(after.model, image_size=32)[1] < rows["original"]["macs"]
    assert 0 <= rows["slim"]["val_top1"] <= 100 and rows["original"]["latency_ms"] > 0
    assert report["ratios"]["params"] == pytest.approx(rows["slim"]["params"] / rows["original"]["params"])
    assert report["widths"] == [list(w) for w in after.model.widths()]
    table = (tmp_path / "out" / "slim.md").read_text()
    assert "| slim: pruned 50% + 1 epoch(s) of recovery, distilled from shapes.pth |" in table


def test_cancel_then_resume_a_slim_run(slim_data: Path, finetuned: Path, tmp_path: Path) -> None:
    stop = threading.Event()
    cfg = SlimConfig(data=str(slim_data), weights=str(finetuned), out=str(tmp_path), prune=0.3, criterion="l1", **RUN)

    def cancel_after_first_step(e: TrainEvent) -> None:
        if e.kind == "step":
            stop.set()

    result = slim(cfg, callback=cancel_after_first_step, stop=stop)
    assert result.finetune.cancelled and result.report is None
    assert not (tmp_path / "slim.json").exists()
    last = torch.load(tmp_path / "last.pth", weights_only=True)
    widths = [list(w) for w in prune_model(load_model(arch="resnet50", weights=str(finetuned)).model,
                                           fraction=0.3, criterion="l1").widths()]  # fmt: skip
    assert last["widths"] == widths and last["batches_done"] == 1
    resumed = slim(SlimConfig(**{**cfg.to_dict(), "resume": str(tmp_path / "last.pth")}))
    assert not resumed.finetune.cancelled and resumed.report is not None
    assert resumed.finetune.summary["steps_done"] == last["total_steps"]


def test_bad_inputs_to_a_run_are_one_clear_sentence(slim_data: Path, finetuned: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain.pth"
    torch.save(build_model("resnet50", num_classes=3).state_dict(), plain)
    other = save_checkpoint(build_model("resnet50", num_classes=2), tmp_path / "two.pth", classes=("a", "b"))
    base = {"data": str(slim_data), "weights": str(finetuned), "out": str(tmp_path / "o"), **RUN}
    cases = [
        ({"weights": str(plain)}, r"^The checkpoint to slim plain\.pth has no class names: use a checkpoint"),
        ({"weights": str(other)}, r"^The checkpoint to slim, two\.pth, predicts 2 classes \(a, b\), not the 3"),
        ({"distill_from": str(plain)}, r"^The teacher plain\.pth has no class names"),
        ({"distill_from": str(other)}, r"^The teacher two\.pth predicts 2 classes \(a, b\), not the 3 of the data"),
        ({"prune": 0.95}, r"^The pruning fraction must be from 0 to 0\.9, not 0\.95\.$"),
        ({"weights": "imagenet-v2"}, r"^Slim needs the fine-tuned checkpoint to slim"),
    ]
    for change, pattern in cases:
        with pytest.raises(UserError, match=pattern) as e:
            slim(SlimConfig(**{**base, **change}))
        assert str(tmp_path) not in str(e.value), change
    assert not (tmp_path / "o" / "best.pth").exists()


def test_the_cli_prints_a_bad_fraction_as_one_line_and_exits_2(
    finetuned: Path, slim_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli_main(["slim", "--data", str(slim_data), "--weights", str(finetuned), "--prune", "1.5"])
    err = capsys.readouterr().err
    assert code == 2 and err == "error: The pruning fraction must be from 0 to 0.9, not 1.5.\n"


def test_finetune_takes_the_distillation_flags() -> None:
    from resnet_demo.__main__ import build_parser
    from resnet_demo.finetune.cli import config_from_args

    args = build_parser("finetune").parse_args(
        ["finetune", "--data", "d", "--distill-from", "resnet152", "--kd-temperature", "2", "--kd-alpha", "0.25"]
    )
    cfg = config_from_args(args)
    assert (cfg.distill_from, cfg.kd_temperature, cfg.kd_alpha) == ("resnet152", 2.0, 0.25)
    assert math.isclose(FinetuneConfig().kd_temperature, 4.0) and FinetuneConfig().kd_alpha == 0.5


def test_the_benchmark_rows_run_and_count_what_they_time() -> None:
    from resnet_demo.bench.slim import bench_slim

    r = bench_slim("resnet50", weights="random", device=torch.device("cpu"), batch_size=2, image_size=64,
                   repeats=1, warmup=0)  # fmt: skip
    pruned = build_model(
        "resnet50", widths=[(a - round(0.3 * a), a - round(0.3 * a)) for a, _ in standard_widths("resnet50")]
    )
    assert r["macs"]["pruned 30% bn-scale"] == model_complexity(pruned, image_size=64)[1]
    assert r["macs"]["pruned 30% bn-scale"] <= 0.75 * r["macs"]["original"]
    assert set(r["cpu_latency_ms"]) == set(r["macs"]) and all(v > 0 for v in r["cpu_latency_ms"].values())
    assert r["cpu_latency_ratio"]["original"] == 1.0
    assert set(r["distill"]["median_s"]) == {"student step", "teacher forward", "distillation step"}


def test_accuracy_figure_keeps_labels_apart_and_literal() -> None:
    from resnet_demo.slim.plots import accuracy_macs_figure

    rows = [
        {"name": "original", "label": "original <b>mine</b>.pth", "macs": 4.1e9, "val_top1": 80.0, "params": 25,
         "latency_ms": 30.0},
        {"name": "pruned", "label": "pruned 30%", "macs": 2.6e9, "val_top1": 70.0, "params": 15, "latency_ms": None},
        {"name": "slim", "label": "slim", "macs": 2.6e9, "val_top1": 78.0, "params": 15, "latency_ms": 24.0},
    ]  # fmt: skip
    fig = accuracy_macs_figure({"arch": "resnet50", "image_size": 224, "rows": rows})
    points = [t for t in fig.data if t.text]
    assert [t.textposition for t in points] == ["top center", "bottom center", "top center"]
    assert "<b>mine</b>" not in points[0].name and "&lt;b&gt;mine" in points[0].name
    assert fig.layout.height
