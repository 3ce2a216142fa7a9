"""The Slim tab's handlers, called directly: a run that streams and reports, bad inputs as one
sentence, and the server's one training slot shared with the Fine-tune tab."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from resnet_demo.core.complexity import model_complexity
from resnet_demo.core.model import build_model
from resnet_demo.core.weights import load_model


@pytest.fixture
def tab(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """The tab's handlers, writing under a fresh work folder."""
    from resnet_demo.ui import session_folders, slim_handlers

    monkeypatch.setattr(session_folders, "WORK_ROOT", tmp_path / "work")
    return slim_handlers


def _request(session: str) -> Any:
    import gradio as gr

    return gr.Request(session_hash=session)


def _prepared(tmp_path: Path, tiny_data: Path, session: str) -> Path:
    """The Fine-tune tab's data folder of ``session``, as its handlers leave it."""
    dest = tmp_path / "work" / session / "data-x1"
    shutil.copytree(tiny_data, dest)
    return dest


def _args(finetuned: Path, **change: Any) -> dict[str, Any]:
    args = {"source": "upload", "upload": str(finetuned), "trained": None, "data": "finetune", "fraction": 0.5,
            "criterion": "bn-scale", "teacher": "self", "epochs": 1}  # fmt: skip
    return {**args, **change}


def test_tab_builds_inside_blocks() -> None:
    import gradio as gr

    from resnet_demo.ui.slim_tab import build_slim_tab

    with gr.Blocks(), gr.Tab("Fine-tune"):
        trained = gr.File(interactive=False)
        with gr.Tab("Slim"):
            built = build_slim_tab(trained=trained)
            alone = build_slim_tab()
    assert isinstance(built.checkpoint, gr.File) and isinstance(built.use_button, gr.Button)
    assert isinstance(built.curves, gr.Plot) and isinstance(built.report_plot, gr.Plot)
    assert alone.checkpoint is not built.checkpoint


def test_teachers_offered_are_the_checkpoint_and_cached_imagenet_models(
    tab: Any, fake_pretrained: Any, torch_home: Path
) -> None:
    assert [v for _label, v in tab.teacher_choices()] == ["none", "self"]  # nothing in the cache
    fake_pretrained("resnet101", "imagenet-v2")
    assert [v for _label, v in tab.teacher_choices()] == ["none", "self", "resnet101"]


def test_a_run_streams_and_ends_with_the_report_and_a_smaller_checkpoint(
    tab: Any, tmp_path: Path, tiny_data: Path, finetuned: Path
) -> None:
    _prepared(tmp_path, tiny_data, "a")
    ticks: list[tuple[int, int]] = []
    outputs = list(tab.run_slim(**_args(finetuned), request=_request("a"), progress=lambda p, **kw: ticks.append(p)))
    first, last = outputs[0], outputs[-1]
    assert first[4] is None and first[5]["interactive"] is False  # no checkpoint while it runs
    status, curves, table, figure, checkpoint, use = last
    assert status.startswith("**Done.** 1 step(s). 0.") and "the MACs" in status and "validation top-1" in status
    assert len(curves.data[0].x) == 1 and ticks[-1] == (1, 1)  # 18 images in batches of 16, the last dropped
    assert table.startswith("| model | params | GMACs |") and "| slim: pruned 50% + 1 epoch(s)" in table
    assert figure.layout.height and {t.text[0] for t in figure.data} == {"original", "pruned", "slim"}
    assert use["interactive"] is True and Path(checkpoint).name == "shapes-slim50.pth"
    after, before = load_model(arch="resnet50", weights=checkpoint), load_model(arch="resnet50", weights=str(finetuned))
    assert after.spec.categories == before.spec.categories
    assert all(a < b for a, b in zip(after.model.widths()[0], before.model.widths()[0], strict=True))
    assert model_complexity(after.model)[0] < 0.6 * model_complexity(before.model)[0]
    assert not list((tmp_path / "work" / "a").glob("slimrun-*"))  # only the offered checkpoint stays
    assert not tab.jobs.busy()
    arch, weights, explain_checkpoint, _tabs = tab.use_slimmed(checkpoint)
    assert (arch, weights["value"], explain_checkpoint) == ("resnet50", "upload", checkpoint)
    from resnet_demo.ui.housekeeping import visitor_left
    from resnet_demo.ui.session_folders import offered_files

    visitor_left(_request("a"))  # the page closed (demo.unload): the slim checkpoint goes with it
    assert not Path(checkpoint).exists() and checkpoint not in offered_files()
    assert not (tmp_path / "work" / "a").exists()


def test_a_session_keeps_one_checkpoint_per_kind_until_its_page_closes(
    tab: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from resnet_demo.ui import session_folders
    from resnet_demo.ui.housekeeping import visitor_left
    from resnet_demo.ui.session_folders import forget, offer, offered_files

    monkeypatch.setattr(session_folders, "get_upload_folder", lambda: str(tmp_path / "cache"))

    def made(name: str) -> Path:
        path = tmp_path / name
        path.write_bytes(name.encode())
        return path

    tuned = offer("a", made("tuned.pth"), kind="finetune")
    slim1 = offer("a", made("slim1.pth"), kind="slim")
    slim2 = offer("a", made("slim2.pth"), kind="slim")
    other = offer("b", made("other.pth"), kind="slim")
    assert tuned.read_bytes() == b"tuned.pth" and slim2.is_file() and other.is_file()
    assert not slim1.exists() and not slim1.parent.exists()  # replaced by the session's newer slim checkpoint
    assert {str(tuned), str(slim2), str(other)} <= offered_files() and str(slim1) not in offered_files()
    visitor_left(_request("a"))
    assert not tuned.exists() and not slim2.exists() and not slim2.parent.exists() and other.is_file()
    assert not {str(tuned), str(slim2)} & offered_files() and str(other) in offered_files()
    forget("b")
    assert not other.exists() and str(other) not in offered_files()


def test_bad_inputs_are_one_sentence(tab: Any, tmp_path: Path, tiny_data: Path, finetuned: Path) -> None:
    import gradio as gr

    plain = tmp_path / "plain.pth"
    torch.save(build_model("resnet50", num_classes=3).state_dict(), plain)
    cases = [
        ({}, r"^The Fine-tune tab has no data for this session"),
        ({"fraction": 1.5}, r"^The pruning fraction must be from 0 to 0\.9, not 1\.5\.$"),
        ({"source": "trained"}, r"^No model has been trained in the Fine-tune tab in this session yet"),
        ({"upload": None}, r"^Upload the fine-tuned \.pth checkpoint to slim"),
        ({"upload": str(plain)}, r"^The checkpoint to slim plain\.pth has no class names"),
        ({"epochs": 500}, r"^Epochs must be between 1 and 100\.$"),
        ({"criterion": "random"}, r"criterion"),
        ({"teacher": "resnet152"}, r"^The ResNet-152 ImageNet teacher predicts 1000 classes .* unpruned checkpoint"),
    ]
    for change, pattern in cases:
        if change == {"fraction": 1.5}:
            _prepared(tmp_path, tiny_data, "a")  # from here on, the data is there
        with pytest.raises(gr.Error) as e:
            next(tab.run_slim(**_args(finetuned, **change), request=_request("a"), progress=None))
        assert re.search(pattern, e.value.message) and str(tmp_path) not in e.value.message, (change, e.value.message)
    assert not tab.jobs.busy()
    with pytest.raises(gr.Error, match="No slim checkpoint yet"):
        tab.use_slimmed(None)


def test_one_training_job_per_server_across_fine_tune_and_slim(
    tab: Any, tmp_path: Path, tiny_data: Path, finetuned: Path
) -> None:
    import gradio as gr

    from resnet_demo.ui import finetune_handlers

    _prepared(tmp_path, tiny_data, "a")
    with tab.jobs.claim(owner="b", epochs=3), pytest.raises(gr.Error, match="already running on this server"):
        next(tab.run_slim(**_args(finetuned), request=_request("a"), progress=None))
    first = tab.run_slim(**_args(finetuned, epochs=3), request=_request("a"), progress=None)
    assert next(first)[0].startswith("Loading the checkpoint, pruning it")  # started: it runs in its thread
    # Every message of the shared slot names the kind of job that holds it.
    with pytest.raises(gr.Error) as busy:
        next(finetune_handlers.run_finetune(str(tiny_data), "resnet50", 1, 0.01, 6, "head", 32,
                                            request=_request("b"), progress=None))  # fmt: skip
    with pytest.raises(gr.Error) as regenerate:
        finetune_handlers.generate_sample(_request("a"))  # the slim run reads this session's data
    with pytest.raises(gr.Error) as cancel:
        tab.cancel_slim(_request("b"))
    assert busy.value.message.startswith("A slim run is already running on this server (")
    assert regenerate.value.message.startswith("Your slim run is running on the current data")
    assert cancel.value.message.startswith("The slim run on this server was started by someone else")
    assert tab.cancel_slim(_request("a")).startswith("Cancelling")
    status, _curves, table, figure, checkpoint, _use = list(first)[-1]
    assert status.startswith("**Cancelled**") and table == "" and figure is None
    assert load_model(arch="resnet50", weights=checkpoint).spec.num_classes == 3  # usable
    assert not tab.jobs.busy() and tab.cancel_slim(_request("a")) == "Nothing is running."


def test_a_busy_server_refuses_before_reading_the_checkpoint_or_writing_a_sample_set(
    tab: Any, tmp_path: Path, finetuned: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gradio as gr

    read: list[str] = []
    real = tab.checkpoint_arch
    monkeypatch.setattr(tab, "checkpoint_arch", lambda path, **kw: read.append(path) or real(path, **kw))
    with tab.jobs.claim(owner="b", epochs=3), pytest.raises(gr.Error) as busy:
        next(tab.run_slim(**_args(finetuned, data="sample"), request=_request("a"), progress=None))
    assert busy.value.message.startswith("A fine-tune is already running on this server (")
    assert read == []  # the checkpoint was never opened
    work = tmp_path / "work"
    assert not work.exists() or not any(p.is_file() for p in work.rglob("*"))  # no sample set, no folder's files
