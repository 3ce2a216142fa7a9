"""The app and the command line give the same sentence for the same mistake.

A wrong choice or an out-of-range number sent to a public endpoint reaches the core's check, as
the command line's flag does, and the caller reads the core's sentence, never Gradio's own
("Value: 'zero' ... is not in the list of choices", "Value 1.5 is greater than maximum value 1.").
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from resnet_demo.__main__ import main

from .conftest import EXAMPLES

CAT = str(EXAMPLES / "cat.jpg")
# /explain's parameters, in their order, good ones: each case spoils one of them.
GOOD = {"arch": "resnet50", "weights": "random", "stage": "layer4", "method": "gradcam", "opacity": 0.5, "view": "crop"}
# (what is wrong, the /explain parameter and its value, the command line's flags for the same mistake)
CASES = [
    ("a model not in the list", {"arch": "zero"}, ["--arch", "zero"]),
    ("a stage not in the list", {"stage": "layer9"}, ["--stage", "layer9"]),
    ("a method not in the list", {"method": "lime"}, ["--method", "lime"]),
    ("an opacity above its range", {"opacity": 1.5}, ["--opacity", "1.5"]),
    ("an opacity below its range", {"opacity": -1}, ["--opacity", "-1"]),
]


@pytest.fixture(scope="module")
def client(app_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """One script's connection for every refused call here: a refusal leaves nothing in its session."""
    client = Client(app_url, verbose=False, download_files=str(tmp_path_factory.mktemp("got")), analytics_enabled=False)
    yield client
    client.close()


def _cli_sentence(flags: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """What ``python -m resnet_demo explain`` says for ``flags``: its one line, without "error: "."""
    assert main(["explain", CAT, "--weights", "random", *flags]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: ") and "\n" not in line, line
    return line.removeprefix("error: ")


def _app_sentence(client: Client, change: dict[str, object]) -> str:
    """What ``/explain`` answers a script that sends ``change`` with otherwise good values."""
    args = {**GOOD, **change}
    with pytest.raises(AppError) as refused:
        client.predict(
            handle_file(CAT), args["arch"], args["weights"], None, args["stage"], args["method"],
            args["opacity"], args["view"], api_name="/explain",
        )  # fmt: skip
    return str(refused.value)


@pytest.mark.parametrize(("what", "change", "flags"), CASES, ids=[c[0] for c in CASES])
def test_app_and_command_line_say_the_same(
    what: str, change: dict[str, object], flags: list[str], client: Client, capsys
) -> None:
    cli = _cli_sentence(flags, capsys)
    assert _app_sentence(client, change) == cli, what


# /transfer's parameters, in their order, good ones: each case spoils one of them.
TRANSFER_GOOD = {"task": "segment", "model": "deeplabv3", "backbone": "resnet50", "threshold": 0.5, "stage": "layer4"}
TRANSFER_CASES = [
    ("a task not in the list", {"task": "zero"}, ["--task", "zero"]),
    ("a model not of the task", {"model": "fasterrcnn"}, ["--task", "segment", "--model", "fasterrcnn"]),
    ("a stage not in the list", {"stage": "layer9"}, ["--stage", "layer9"]),
    ("a threshold above its range", {"threshold": 1.5}, ["--threshold", "1.5"]),
    ("a threshold below its range", {"threshold": -1}, ["--threshold", "-1"]),
]


@pytest.mark.parametrize(("what", "change", "flags"), TRANSFER_CASES, ids=[c[0] for c in TRANSFER_CASES])
def test_transfer_and_its_command_say_the_same(
    what: str, change: dict[str, object], flags: list[str], client: Client, capsys
) -> None:
    args = {**TRANSFER_GOOD, **change}
    base = ["--task", str(args["task"])] if "--task" not in flags else []
    assert main(["transfer", CAT, *base, *flags]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: ") and "\n" not in line, line
    with pytest.raises(AppError) as refused:
        client.predict(
            handle_file(CAT), args["task"], args["model"], args["backbone"], args["threshold"], 320, None,
            args["stage"], api_name="/transfer",
        )  # fmt: skip
    assert str(refused.value) == line.removeprefix("error: "), what


def test_a_size_that_is_no_number_is_a_sentence(client: Client) -> None:
    with pytest.raises(AppError, match=r"^The input size must be a whole number of pixels, not 'big'\.$"):
        client.predict(
            handle_file(CAT), "segment", "deeplabv3", "resnet50", 0.5, "big", None, "layer4", api_name="/transfer"
        )


def test_a_photo_that_fails_to_load_is_named_by_its_own_name_on_every_endpoint(client: Client, tmp_path: Path) -> None:
    # Passes Gradio's upload (a JPEG's header), fails in the decoder: the message names the file, never
    # the server's folder it was uploaded to.
    whole = (EXAMPLES / "cat.jpg").read_bytes()
    broken = tmp_path / "truncated.jpg"
    broken.write_bytes(whole[: len(whole) // 3])
    photo = handle_file(str(broken))
    calls = {
        "/predict": (photo, "resnet50", "random"),
        "/explain": (photo, "resnet50", "random", None, "layer4", "gradcam", 0.5, "crop"),
        "/compare": (photo, "random"),
        "/evaluate": (photo, "resnet50", "random", None, "layer4", "gradcam", "", ""),
        "/transfer": (photo, "segment", "deeplabv3", "resnet50", 0.5, 320, None, "layer4"),
    }
    for endpoint, args in calls.items():
        with pytest.raises(AppError) as refused:
            client.predict(*args, api_name=endpoint)
        message = str(refused.value)
        assert "truncated.jpg" in message and "truncated" in message.replace("truncated.jpg", ""), message
        assert "/" not in message.replace("truncated.jpg", ""), f"{endpoint} shows a path: {message}"
