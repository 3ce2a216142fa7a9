"""The command line's promise for bad input (README): every command answers it with ONE line on
stderr, ``error: <sentence>``, and exit status 2: no traceback, no usage screen, no warning
before it, and no folder of this machine in it beyond the name of the file the user gave.

One table: each command against each kind of bad input it takes. Every row runs through
``main()``; one row per command also runs as a real ``python -m resnet_demo`` process, where
warnings and tracebacks reach stderr exactly as a user sees them. Every input fails before
any training or timing starts, and nothing downloads (``RESNET_DEMO_OFFLINE=1``, no weights
in the cache but the test's own misfit file).
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import tempfile
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image

from resnet_demo.__main__ import COMMANDS, main
from resnet_demo.core.weights import CHECKPOINT_FORMAT, OFFLINE_ENV, Preprocessing, clear_model_cache
from resnet_demo.transfer.weights import clear_transfer_cache, transfer_spec

from .conftest import EXAMPLES, ROOT

CAT = str(EXAMPLES / "cat.jpg")


@dataclass(frozen=True)
class Files:
    """The bad (and the few good) inputs, all under ``root``: the folder no message may show."""

    root: Path
    home: Path  # TORCH_HOME: empty but for a segmentation file that does not fit its model
    missing: Path  # no such file
    notes: Path  # text, named like a photo
    bomb: Path  # a PNG whose header claims 90 M pixels: over PIL's warning limit
    misfit: Path  # a fine-tune checkpoint (2 classes) whose weights are not a ResNet-50's
    data: Path  # a valid image folder, for the rows whose bad input comes after the data
    out: Path  # where a command would write, were it to get that far


def _bomb_png(path: Path) -> None:
    """An 8x8 PNG whose IHDR says 10000x9000: PIL warns on opening it, before anything decodes."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", 10000, 9000)  # IHDR's width and height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # its CRC, so PIL accepts the chunk
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    from resnet_demo.data import make_sample_dataset

    root = tmp_path_factory.mktemp("contract")
    home = root / "torch_home"
    segment = transfer_spec(task="segment")
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save({"backbone.conv1.weight": torch.zeros(2, 3)}, home / "hub" / "checkpoints" / segment.file_name)
    misfit = root / "misfit.pth"
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "arch": "resnet50",
            "model": {"fc.weight": torch.zeros(2, 5), "fc.bias": torch.zeros(2)},  # a wrong shape, 318 missing
            "class_names": ["a", "b"],
            "preprocessing": Preprocessing(resize_size=36, crop_size=32).to_dict(),
        },
        misfit,
    )
    notes = root / "notes.jpg"
    notes.write_text("not a photo")
    _bomb_png(root / "bomb.png")
    data = make_sample_dataset(root / "shapes", num_classes=2, images_per_class=4, image_size=32)
    return Files(root, home, root / "missing.jpg", notes, root / "bomb.png", misfit, data, root / "out")


@dataclass(frozen=True)
class Case:
    command: str
    kind: str
    argv: Callable[[Files], list[str]]  # after the command's name
    says: str  # part of the expected sentence: the row fails for its own reason, not an earlier one
    process: bool = False  # also run as a real process (one row per command)


def _photo_rows(command: str, options: list[str], *, wrong_type: list[str], process: str) -> list[Case]:
    """explain and evaluate: a photo, ImageNet-sized classes and ResNet weights."""
    rows = [
        Case(command, "missing file", lambda f: [str(f.missing), *options], "No file at 'missing.jpg'"),
        Case(command, "non-image file", lambda f: [str(f.notes), *options], "notes.jpg is not an image file"),
        Case(command, "decompression bomb", lambda f: [str(f.bomb), *options], "possible decompression bomb"),
        Case(command, "unknown class", lambda f: [CAT, *options, "--target", "zzzz"], "No class matches 'zzzz'"),
        Case(command, "misfit weights", lambda f: [CAT, "--weights", str(f.misfit)], "misfit.pth does not fit"),
        Case(command, "wrong type", lambda f: [CAT, *options, *wrong_type], "invalid int value: 'abc'"),
    ]
    return [Case(c.command, c.kind, c.argv, c.says, process=c.kind == process) for c in rows]


def _training_rows(command: str, *, wrong_type: list[str], missing: Case) -> list[Case]:
    """finetune and slim: a folder (or zip) of images and a checkpoint.

    No "unknown class" row: they take no class (the data's folders are the classes). No
    "decompression bomb" row: an unreadable image inside a data set is skipped and counted, by design.
    """
    return [
        missing,
        Case(
            command,
            "non-image file",
            lambda f: ["--data", str(f.notes), "--weights", str(f.misfit), "--out", str(f.out)],
            "notes.jpg is not a readable zip file",
        ),
        Case(
            command,
            "misfit weights",
            lambda f: ["--data", str(f.data), "--weights", str(f.misfit), "--out", str(f.out)],
            "misfit.pth does not fit resnet50",
            process=True,
        ),
        Case(command, "wrong type", lambda f: wrong_type, "value: 'abc'"),
    ]


SEGMENT = ["--task", "segment"]
CASES: list[Case] = [
    # info reads no file, no class and no weights: its one input that can be wrong is an option.
    Case("info", "wrong type", lambda f: ["--image-size", "abc"], "invalid int value: 'abc'", process=True),
    *_photo_rows("explain", ["--weights", "random"], wrong_type=["--topk", "abc"], process="decompression bomb"),
    *_photo_rows(
        "evaluate",
        ["--weights", "random", "--no-sanity", "--no-rank"],
        wrong_type=["--steps", "abc"],
        process="unknown class",
    ),
    *_training_rows(
        "finetune",
        wrong_type=["--epochs", "abc"],
        missing=Case("finetune", "missing file", lambda f: ["--data", str(f.missing)], "No data at 'missing.jpg'"),
    ),
    *_training_rows(
        "slim",
        wrong_type=["--prune", "abc"],
        missing=Case(
            "slim",
            "missing file",
            lambda f: ["--data", str(f.data), "--weights", str(f.missing), "--out", str(f.out)],
            "The checkpoint to slim, 'missing.jpg', does not exist",
        ),
    ),
    # transfer's weights are torchvision's published files, so the misfit is the file in the cache.
    Case("transfer", "missing file", lambda f: [str(f.missing), *SEGMENT], "No file at 'missing.jpg'"),
    Case("transfer", "non-image file", lambda f: [str(f.notes), *SEGMENT], "notes.jpg is not an image file"),
    Case("transfer", "decompression bomb", lambda f: [str(f.bomb), *SEGMENT], "possible decompression bomb"),
    Case("transfer", "unknown class", lambda f: [CAT, *SEGMENT, "--target", "zzzz"], "Unknown class 'zzzz'"),
    Case(
        "transfer",
        "misfit weights",
        lambda f: [CAT, *SEGMENT, "--out", str(f.out)],
        "deeplabv3_resnet50_coco-cd0a2569.pth does not fit deeplabv3",
        process=True,
    ),
    Case("transfer", "wrong type", lambda f: [CAT, *SEGMENT, "--threshold", "abc"], "invalid float value: 'abc'"),
    # audit reads a folder or zip of photos. No "unknown class" row: its classes are the data's folders.
    Case("audit", "missing file", lambda f: [str(f.missing)], "No folder or .zip named missing.jpg"),
    Case("audit", "non-image file", lambda f: [str(f.notes)], "No folder or .zip named notes.jpg"),
    Case(
        "audit",
        "misfit weights",
        lambda f: [str(f.data), "--weights", str(f.misfit), "--out", str(f.out)],
        "misfit.pth does not fit resnet50",
        process=True,
    ),
    Case("audit", "wrong type", lambda f: [str(f.data), "--batch-size", "abc"], "invalid int value: 'abc'"),
    # bench times a photo on ResNet weights. No "unknown class" row: it takes no class (it times the top one).
    Case("bench", "missing file", lambda f: ["--image", str(f.missing)], "No file at 'missing.jpg'"),
    Case(
        "bench", "non-image file", lambda f: ["--image", str(f.notes)], "notes.jpg is not an image file", process=True
    ),
    Case("bench", "decompression bomb", lambda f: ["--image", str(f.bomb)], "possible decompression bomb"),
    Case("bench", "misfit weights", lambda f: ["--weights", str(f.misfit), "--size", "32"], "misfit.pth does not fit"),
    Case("bench", "wrong type", lambda f: ["--repeats", "abc"], "invalid int value: 'abc'"),
    Case("bench", "out of range", lambda f: ["--repeats", "0"], "--repeats must be at least 1."),
]
PROCESS_CASES = [c for c in CASES if c.process]
# Python's default filters: what a user's terminal shows (DeprecationWarning only from __main__).
HIDDEN_BY_DEFAULT = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


def test_the_table_covers_every_command_once_as_a_process() -> None:
    assert {c.command for c in CASES} == set(COMMANDS)
    assert sorted(c.command for c in PROCESS_CASES) == sorted(COMMANDS)


def _check_one_line(rc: int, err: str, case: Case, files: Files) -> None:
    assert rc == 2, (case.kind, err)
    assert err.startswith("error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err and "usage:" not in err
    assert case.says in err, err
    # The file's name may show; the folder it sits in (here, the temp folder) never.
    assert str(files.root) not in err and tempfile.gettempdir() not in err, err


@pytest.fixture
def cache(files: Files, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The table's weights cache, no model loaded by an earlier test, and a scratch working folder."""
    monkeypatch.setenv("TORCH_HOME", str(files.home))
    (files.root / "cwd").mkdir(exist_ok=True)
    monkeypatch.chdir(files.root / "cwd")  # a row that wrongly ran on would write its default --out here
    clear_model_cache()
    clear_transfer_cache()
    yield files.home
    clear_model_cache()
    clear_transfer_cache()


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.command}-{c.kind}")
def test_bad_input_is_one_line_and_status_2(case: Case, files: Files, cache: Path, capsys) -> None:
    # Warnings a terminal would show are recorded here instead of printed: count them as lines.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = main([case.command, *case.argv(files)])
    shown = [f"{w.category.__name__}: {w.message}" for w in caught if not issubclass(w.category, HIDDEN_BY_DEFAULT)]
    assert shown == []
    _check_one_line(rc, capsys.readouterr().err, case, files)


@pytest.fixture(scope="module")
def processes(files: Files) -> Iterator[dict[str, subprocess.Popen[str]]]:
    """One real ``python -m resnet_demo`` per command, started together (they mostly import torch)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}  # the user's default filters
    env.update(TORCH_HOME=str(files.home), PYTHONPATH=str(ROOT), **{OFFLINE_ENV: "1"})
    cwd = files.root / "cwd"
    cwd.mkdir(exist_ok=True)
    started = {
        c.command: subprocess.Popen(
            [sys.executable, "-m", "resnet_demo", c.command, *c.argv(files)],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,  # only stderr is promised; a full stdout pipe must not block a run
            stderr=subprocess.PIPE,
            text=True,
        )
        for c in PROCESS_CASES
    }
    yield started
    for proc in started.values():  # a command that wrongly ran on (a benchmark, a training) stops here
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow  # eight interpreters importing torch on a shared CPU: tens of seconds together
@pytest.mark.parametrize("case", PROCESS_CASES, ids=lambda c: f"{c.command}-{c.kind}")
def test_a_real_process_prints_one_line(case: Case, files: Files, processes: dict[str, subprocess.Popen[str]]) -> None:
    proc = processes[case.command]
    _, err = proc.communicate(timeout=180)
    _check_one_line(proc.returncode, err, case, files)


def test_help_still_prints_usage_and_exits_0(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["info", "--help"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("usage: python -m resnet_demo info")
