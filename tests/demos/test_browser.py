"""The demo in a real browser (Playwright driving Debian's chromium, installed by ``make test``), on
the shipped codec and LM: each tab end to end, a bad upload, the slider's limit, and a loopback load
test of ten concurrent clients. The server runs as users start it (``demos/app.py``)."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]
CLIP = REPO / "tests" / "data" / "codec_acceptance" / "sfx.flac"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
RUN_TIMEOUT_MS = 240_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``demos/app.py`` on a free loopback port: yields (url, its temporary folder); stopped with Ctrl-C."""
    if not Path(CHROMIUM).is_file():
        pytest.fail("Debian's chromium is missing: `make test` installs it (apt-get install chromium)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    log = tmp_path_factory.mktemp("demo") / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, str(REPO / "demos" / "app.py"), "--port", str(port),
                                    "--decode-steps", "2", "--concurrency", "2"], stdout=out, stderr=subprocess.STDOUT,
                                   env=env, cwd=tmp_path_factory.mktemp("cwd"))
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"the demo did not start:\n{log.read_text()}")
            time.sleep(1)
    workdir = Path(re.search(r"files in (\S+)\)", log.read_text()).group(1))
    yield url, workdir
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=120)  # a busy machine can take a while to close the server
    except subprocess.TimeoutExpired:
        process.kill()
    assert not workdir.exists(), "the demo left its temporary folder behind"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture()
def page(browser, server):
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    page.goto(server[0], wait_until="networkidle")
    yield page
    page.close()


def _seconds_of(page, link) -> float:
    """Duration of the audio file behind a download link of the page."""
    data = page.request.get(link.get_attribute("href")).body()
    info = sf.info(io.BytesIO(data))
    return info.frames / info.samplerate


def _streamed_seconds(page, elem_id: str, expected: float, tolerance: float = 0.3) -> float:
    """Duration of what a streaming audio player received, waiting (a minute at most) until it is within
    ``tolerance`` of ``expected``: the player's duration grows as chunks arrive."""
    return page.wait_for_function(
        f"() => {{ const a = document.querySelector('#{elem_id} audio');"
        f" return a && isFinite(a.duration) && Math.abs(a.duration - {expected}) < {tolerance} ? a.duration : null; }}",
        timeout=60_000).json_value()


def _download_link(page, suffix: str):
    link = page.locator(f"a[href$='{suffix}']").last
    link.wait_for(state="attached", timeout=RUN_TIMEOUT_MS)
    return link


def test_codec_tab_round_trip(page, server, tmp_path):
    page.locator("input[type=file]").first.set_input_files(str(CLIP))
    page.wait_for_timeout(1000)
    page.click("#codec-run")
    page.wait_for_selector("#codec-stats :text('tokens/s')", timeout=RUN_TIMEOUT_MS)
    assert "pairs for 2.32 s" in page.inner_text("#codec-stats")
    wav = _download_link(page, ".reconstruction.wav")
    assert abs(_seconds_of(page, wav) - sf.info(str(CLIP)).duration) < 0.2
    assert page.locator("a[href$='.tokens.safetensors']").count() >= 1
    assert page.locator("img[src*='spectrograms']").count() == 1
    assert f"file={server[1]}" in wav.get_attribute("href")  # served from the demo's own folder
    # The streamed player got the whole clip too.
    _streamed_seconds(page, "codec-stream", sf.info(str(CLIP)).duration)
    page.screenshot(path=str(tmp_path / "codec-tab.png"), full_page=True)  # looked at by hand, kept by pytest


@pytest.mark.parametrize("content, message", [(b"not audio at all", "notes.wav: not an audio file"),
                                              (b"", "notes.wav: the file is empty")])
def test_a_bad_upload_shows_an_error_naming_the_file(page, tmp_path, content, message):
    bad = tmp_path / "notes.wav"
    bad.write_bytes(content)
    page.locator("input[type=file]").first.set_input_files(str(bad))
    page.wait_for_timeout(1000)
    page.click("#codec-run")
    toast = page.locator(".toast-body, [data-testid='toast-body']").first
    toast.wait_for(timeout=60_000)
    assert message in toast.inner_text() and "/tmp" not in toast.inner_text()


def test_text_to_audio_tab_and_the_sliders_limit(page):
    from lm.api import AudioGenerator

    limit = AudioGenerator.from_pretrained("default").max_seconds()
    page.get_by_role("tab", name="Text to audio").click()
    slider = page.get_by_label(re.compile("range slider for Seconds")).first
    assert 0 < float(slider.get_attribute("max")) <= limit
    page.get_by_label("Caption").first.fill("a steady sine tone at A4 (440 Hz)")
    number = page.get_by_label(re.compile("number input for Seconds")).first
    number.fill("2")
    number.press("Enter")
    page.get_by_role("button", name="Generate").first.click()
    audio = _download_link(page, "generated.tokens.safetensors")
    assert audio.count() == 1
    wav = page.locator("a[download][href*='.wav']").last
    wav.wait_for(state="attached", timeout=RUN_TIMEOUT_MS)
    assert abs(_seconds_of(page, wav) - 2.0) < 0.05
    _streamed_seconds(page, "tts-stream", 2.0)  # it also played as it decoded


def test_continue_tab(page):
    page.get_by_role("tab", name="Continue a clip").click()
    page.locator("input[type=file]").last.set_input_files(str(CLIP))
    page.wait_for_timeout(1000)
    number = page.get_by_label(re.compile("number input for Seconds")).last
    number.fill("1")
    number.press("Enter")
    page.get_by_role("button", name="Generate").last.click()
    _download_link(page, "generated.tokens.safetensors")
    wav = page.locator("a[download][href*='.wav']").last
    wav.wait_for(state="attached", timeout=RUN_TIMEOUT_MS)
    assert _seconds_of(page, wav) > sf.info(str(CLIP)).duration + 0.9  # the prompt, then 1 s of new audio


def test_ten_concurrent_clients_are_all_served_with_queue_positions(server):
    from gradio_client import Client, handle_file

    url, workdir = server
    before = {p for p in Path(REPO).rglob("*") if ".venv" not in p.parts and ".git" not in p.parts}

    def one(index: int) -> tuple[float, int]:
        client = Client(url, verbose=False)
        start = time.monotonic()
        job = client.submit(handle_file(str(CLIP)), 1, "dpmpp2m", index, api_name="/round_trip")
        ranks = []
        while not job.done():
            status = job.status()
            if status.rank is not None:
                ranks.append(status.rank)
            time.sleep(0.2)
        outputs = job.result()
        assert Path(outputs[-1]).is_file()
        return time.monotonic() - start, max(ranks, default=0)

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(one, range(10)))
    latencies = sorted(seconds for seconds, _ in results)
    print(f"\n10 clients, concurrency 2: median {statistics.median(latencies):.1f} s, max {latencies[-1]:.1f} s")
    assert len(results) == 10
    assert max(rank for _, rank in results) >= 1  # some clients waited in the queue and were told their place
    after = {p for p in Path(REPO).rglob("*") if ".venv" not in p.parts and ".git" not in p.parts}
    assert not {p for p in after - before if "__pycache__" not in p.parts}, "the demo wrote into the repository"
