"""The Fine-tune tab's handlers, called directly: data preparation, estimates, the run, one job per server."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import pytest

from resnet_demo.core.weights import load_model


@pytest.fixture
def tab(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """The tab's handlers, writing under a fresh work folder."""
    from resnet_demo.ui import finetune_handlers, session_folders

    monkeypatch.setattr(session_folders, "WORK_ROOT", tmp_path / "work")
    finetune_handlers._TIMINGS.clear()
    return finetune_handlers


def _request(session: str) -> Any:
    import gradio as gr

    return gr.Request(session_hash=session)


def test_tab_builds_inside_blocks() -> None:
    import gradio as gr

    from resnet_demo.ui.finetune_tab import build_finetune_tab

    with gr.Blocks(), gr.Tab("Fine-tune"):
        built = build_finetune_tab()
    assert isinstance(built.checkpoint, gr.File) and isinstance(built.use_button, gr.Button)
    assert isinstance(built.arch, gr.Radio) and isinstance(built.curves, gr.Plot)


def test_tab_prepares_data_safely_and_estimates_time(tab: Any, tmp_path: Path, tiny_data: Path) -> None:
    import gradio as gr

    with pytest.raises(gr.Error, match="Upload a .zip"):
        tab.prepare_upload(None, _request("a"))
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("cat/0.jpg", b"x")
        zf.writestr("../../escaped.jpg", b"x")
    with pytest.raises(gr.Error, match="climbs out"):
        tab.prepare_upload(str(evil), _request("a"))
    assert not list((tmp_path / "work" / "a").glob("data-*")) and not (tmp_path / "escaped.jpg").exists()

    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        for f in sorted(tiny_data.rglob("*.jpg")):
            zf.write(f, f"shapes/{f.relative_to(tiny_data)}")
    folder, summary = tab.prepare_upload(str(good), _request("a"))
    assert Path(folder).parent == tmp_path / "work" / "a"
    assert "3 classes, 18 training and 6 validation images" in summary

    sample, summary = tab.generate_sample(_request("a"))
    assert "circle (32), square (32), triangle (32)" in summary
    assert not Path(folder).exists()  # the session's earlier data went

    with pytest.raises(gr.Error, match="Prepare the data first"):
        tab.estimate_time(None, "resnet50", 2, 4, "head", 64)
    with pytest.raises(gr.Error, match="Epochs"):
        tab.estimate_time(sample, "resnet50", 0, 4, "head", 64)
    text = tab.estimate_time(sample, "resnet50", 2, 2, "head", 32)
    assert text.startswith("**Estimated time: about ") and "2 epoch(s) of 96 training" in text


def test_tab_streams_curves_and_offers_the_checkpoint(tab: Any, tiny_data: Path, pretrained: Path) -> None:
    import gradio as gr

    with pytest.raises(gr.Error, match="learning rate"):
        next(tab.run_finetune(str(tiny_data), "resnet50", 1, 0, 6, "head", 32, request=_request("a"), progress=None))
    ticks: list[tuple[int, int]] = []
    outputs = list(
        tab.run_finetune(
            str(tiny_data),
            "resnet50",
            2,
            0.01,
            6,
            "head",
            32,
            request=_request("a"),
            progress=lambda p, **kw: ticks.append(p),
        )
    )
    status, figure, checkpoint, use = outputs[-1]
    assert status.startswith("**Done.** 2 epoch(s), 6 steps.")
    assert figure.layout.height and len(figure.data[0].x) == 6  # loss of every step
    assert ticks[-1] == (6, 6)
    assert use["interactive"] is True
    loaded = load_model(arch="resnet50", weights=checkpoint)
    assert loaded.spec.categories == ("circle", "square", "triangle")
    assert tab.jobs.current() is None and not tab.jobs.busy()


def test_tab_runs_one_fine_tune_at_a_time_and_its_owner_can_cancel(tab: Any, tiny_data: Path, pretrained: Path) -> None:
    import gradio as gr

    first = tab.run_finetune(str(tiny_data), "resnet50", 3, 0.01, 6, "head", 32, request=_request("a"), progress=None)
    next(first)  # started: the training thread runs
    with pytest.raises(gr.Error, match="already running on this server"):
        next(tab.run_finetune(str(tiny_data), "resnet50", 1, 0.01, 6, "head", 32, request=_request("b"), progress=None))
    with pytest.raises(gr.Error, match="started by someone else"):
        tab.cancel_finetune(_request("b"))
    with pytest.raises(gr.Error, match="Your fine-tune is running"):
        tab.generate_sample(_request("a"))
    assert tab.cancel_finetune(_request("a")).startswith("Cancelling")
    status, _figure, checkpoint, _use = list(first)[-1]
    assert status.startswith("**Cancelled**")
    assert load_model(arch="resnet50", weights=checkpoint).spec.num_classes == 3  # usable
    assert not tab.jobs.busy() and tab.cancel_finetune(_request("a")) == "Nothing is running."


def test_tab_refuses_one_class_by_the_zip_name_and_leaves_nothing(tab: Any, tmp_path: Path, tiny_data: Path) -> None:
    import gradio as gr

    one = tmp_path / "pets.zip"
    with zipfile.ZipFile(one, "w") as zf:
        for f in sorted((tiny_data / "train" / "circle").glob("*.jpg")):
            zf.write(f, f"circle/{f.name}")
    session = "k8x2mq9d0zv"
    with pytest.raises(gr.Error) as e:
        tab.prepare_upload(str(one), _request(session))
    message = e.value.message
    assert message.startswith("pets.zip has 1 class folder(s); fine-tuning needs at least 2.")
    assert session not in message and str(tmp_path) not in message
    assert not list((tmp_path / "work" / session).glob("data-*"))  # the unpacked images went too


def test_tab_says_what_to_do_in_the_app_when_imagenet_weights_are_missing(
    tab: Any, tiny_data: Path, torch_home: Path
) -> None:
    import gradio as gr

    args = (str(tiny_data), "resnet50", 1, 0.01, 6, "head", 32)
    with pytest.raises(gr.Error) as e:
        list(tab.run_finetune(*args, "imagenet-v2", request=_request("a"), progress=None))
    message = e.value.message
    assert "are not in torchvision's cache" in message and "pick Random in the Weights menu" in message
    assert "--weights" not in message and str(torch_home) not in message
    assert not tab.jobs.busy()
    with pytest.raises(gr.Error, match="The starting weights must be imagenet-v2, imagenet-v1 or random"):
        next(tab.run_finetune(*args, str(torch_home / "mine.pth"), request=_request("a"), progress=None))


def test_tab_reports_a_diverged_run_without_the_server_path(tab: Any, tmp_path: Path) -> None:
    from resnet_demo.core.errors import UserError
    from resnet_demo.finetune import TrainingDiverged
    from resnet_demo.finetune.plots import TrainingHistory

    last = tmp_path / "work" / "k8x2mq9d0zv" / "run-1" / "last.pth"
    error = TrainingDiverged("Training diverged: the loss became nan. Try a learning rate 10x lower.", last_good=last)
    assert str(last) in str(error)  # the command line's user can resume from it

    def diverges() -> Any:
        raise error

    # A job whose run raised, streamed to its page as the tab streams every run.
    job = tab.jobs.Job(owner="k8x2mq9d0zv", epochs=1)
    job.start(diverges)
    with pytest.raises(UserError) as e:
        list(tab.follow_job(job, history=TrainingHistory(epochs_total=1), progress=None))
    assert str(e.value) == "Training diverged: the loss became nan. Try a learning rate 10x lower."
