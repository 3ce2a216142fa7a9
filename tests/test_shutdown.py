"""``python app.py`` leaves none of its files behind when it stops: on SIGTERM (how hosts and process
managers stop a server) and on Ctrl-C alike, after serving a request that wrote some."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from .conftest import EXAMPLES, ROOT, free_port


def _files(*roots: Path) -> set[Path]:
    return {p for root in roots for p in root.rglob("*") if p.is_file()}


def _wait_until_serving(proc: subprocess.Popen, log: Path, url: str, *, timeout_s: float = 180.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"app.py stopped with status {proc.returncode}:\n{log.read_text()}"
        if "To create a public link" in log.read_text():  # launch() is past its own check of the page
            assert httpx.get(url + "config", timeout=10).status_code == 200
            return
        time.sleep(0.2)
    raise AssertionError(f"app.py did not start in {timeout_s:.0f} s:\n{log.read_text()}")


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_the_app_removes_its_files_when_it_stops(stop: signal.Signals, tmp_path: Path) -> None:
    cache, temp = tmp_path / "gradio", tmp_path / "tmp"  # Gradio's cache; the system temp folder
    temp.mkdir()
    port = free_port()
    env = {
        **os.environ,
        "GRADIO_TEMP_DIR": str(cache),
        "TMPDIR": str(temp),  # the raw maps and the sessions' work folders go to the system temp folder
        "TORCH_HOME": str(tmp_path / "torch_home"),  # empty: random weights
        "RESNET_DEMO_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("GRADIO_SERVER_NAME", None)
    log = tmp_path / "app.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_serving(proc, log, url)
        client = Client(url, verbose=False, download_files=False, analytics_enabled=False)
        client.predict(
            handle_file(str(EXAMPLES / "cat.jpg")), "resnet50", "random", None, "layer4", "gradcam", 0.5, "crop",
            api_name="/explain",
        )  # fmt: skip
        client.close()
        made = _files(cache, temp)
        # The photo's upload, the images returned, the raw map in its own folder: the request wrote files.
        assert any(p.suffix == ".npy" for p in made) and any(p.name == "cat.jpg" for p in made), made
        folders = {p.parent for p in made}
    finally:
        proc.send_signal(stop)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    text = log.read_text()
    assert code == 0 and "Traceback" not in text, f"app.py exited with status {code}:\n{text}"
    assert _files(cache, temp) == set(), f"files left behind:\n{text}"
    assert not [f for f in folders if f.exists()], "the folders of the app's files are left behind"
