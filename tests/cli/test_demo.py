"""`tip-demo` served for real and driven in a headless browser: Debian's chromium (apt),
through Playwright with the system browser (no browser download).

The page loads, the stage controls rewrite the restoration prompt, an oversized image is
refused with one line, an uploaded photo comes back restored in the before/after slider;
uploads past the size limit are turned away; every upload lands in the server's private
temporary folder, which is gone once SIGTERM has stopped it. A screenshot of the page
after the restoration is written to SCREENSHOT ($TIP_TEST_ARTIFACTS, default
<temp dir>/tip_jax_test_artifacts/tip-demo.png), where CI can pick it up.
"""

import io
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import skimage.data
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from tests.fixtures.checkpoint import tiny_checkpoint  # noqa: F401  (a fixture)
from tests.train.test_trainer import ROOT, subprocess_env
from tip_jax import demo
from tip_jax.degrade.parameterized import TIPConfig

CHROMIUM = "/usr/bin/chromium"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--no-first-run"]
SCREENSHOT = Path(os.environ.get("TIP_TEST_ARTIFACTS") or
                  Path(tempfile.gettempdir()) / "tip_jax_test_artifacts") / "tip-demo.png"
SIDE = 32          # the fixture's training crops
MAX_SIDE = 48
MAX_UPLOAD_MB = 0.05


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _serve(checkpoint: str, log: Path) -> tuple[subprocess.Popen, str]:
  port = _free_port()
  proc = subprocess.Popen(
      [sys.executable, "-m", "tip_jax.cli.demo", f"--checkpoint={checkpoint}",
       f"--port={port}", "--steps=2", f"--max_side={MAX_SIDE}",
       f"--max_upload_mb={MAX_UPLOAD_MB}"],
      cwd=ROOT, env=subprocess_env(devices=1), stdout=log.open("w"), stderr=subprocess.STDOUT)
  url = f"http://127.0.0.1:{port}"
  deadline = time.monotonic() + 300
  while f"Running on local URL:  {url}" not in log.read_text():
    assert proc.poll() is None, log.read_text()[-3000:]
    assert time.monotonic() < deadline, log.read_text()[-3000:]
    time.sleep(0.5)
  return proc, url


def _photo(path: Path, side: int) -> Path:
  Image.fromarray(skimage.data.astronaut()).resize((side, side), Image.LANCZOS).save(path)
  return path


def _use_the_page(url: str, tmp_path: Path) -> None:
  with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(url)
    expect(page).to_have_title("tip-demo")

    # The restoration prompt follows the stage controls.
    page.get_by_label("Denoise", exact=True).check()
    noise = TIPConfig().defaults["noise_sigma"]
    expected = demo.controls_prompt(False, 0, False, 0, True, noise, False, 0)
    prompt = page.get_by_role("textbox", name=re.compile("^restoration prompt"))
    expect(prompt).to_have_value(expected)

    # Too large a side for this server: one line in the page.
    page.locator("input[type=file]").set_input_files(_photo(tmp_path / "big.png", 64))
    page.get_by_role("button", name="Restore").click()
    expect(page.get_by_text(f"at most {MAX_SIDE} pixels a side")).to_be_visible(timeout=60_000)
    page.get_by_label("Clear").first.click()

    page.locator("input[type=file]").set_input_files(_photo(tmp_path / "in.png", SIDE))
    page.get_by_role("textbox", name=re.compile("^semantic prompt")).fill("a smiling astronaut")
    page.get_by_role("button", name="Restore").click()
    status = page.get_by_text(f"Restored {SIDE}x{SIDE} -> {SIDE}x{SIDE}")
    expect(status).to_be_visible(timeout=300_000)
    assert f'c_r = "{expected}"' in status.inner_text()
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    # The input's preview, then the slider's before and after, served back as PNGs.
    shown = page.locator("img[src*='/file=']")
    expect(shown).to_have_count(3)
    after = page.request.get(shown.nth(2).get_attribute("src")).body()
    assert Image.open(io.BytesIO(after)).size == (SIDE, SIDE)
    browser.close()


def _upload(url: str, name: str, data: bytes) -> httpx.Response:
  return httpx.post(f"{url}/gradio_api/upload", files={"files": (name, data)})


@pytest.mark.slow
def test_a_browser_uploads_a_photo_and_gets_it_back_restored(tiny_checkpoint, tmp_path):  # noqa: F811
  if not os.access(CHROMIUM, os.X_OK):
    pytest.fail(f"no browser at {CHROMIUM}: apt-get install -y chromium (what .ci/run does)")
  proc, url = _serve(tiny_checkpoint, tmp_path / "tip-demo.log")
  try:
    _use_the_page(url, tmp_path)
    # Uploads: bounded in size, kept only in the server's private temporary folder.
    limit = int(MAX_UPLOAD_MB * 2**20)
    big = _upload(url, "big.png", bytes(2 * limit))
    assert big.status_code == 413 and f"maximum allowed size of {limit} bytes" in big.text
    stored = Path(_upload(url, "in.png", (tmp_path / "in.png").read_bytes()).json()[0])
    folder = stored.parents[1]
    assert folder.name.startswith("tip-demo-") and stored.is_file()
  finally:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
  assert not folder.exists()
