"""The experiment log page renders in a real browser: headless Chromium (Debian's `chromium`, no
browser download) screenshots a page built from a small record with report sections and an SVG
plot, and its DOM after rendering holds the tables and the plot.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.test_soda_local import make_record

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser"))
                 if p and os.path.exists(p)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's `chromium` is not installed "
                                                         "(apt-get install chromium); the browser test needs it")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,2000"]


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    from pipeline.experiment_log import ExperimentRecord
    from steps.report import build_sections

    root = tmp_path_factory.mktemp("browser")
    data = make_record(root)
    record = ExperimentRecord.__new__(ExperimentRecord)
    record.url = str(root / "experiments" / "handmade-abc123.json")
    record.data, record.run = data, data["runs"][-1]
    record.report = build_sections
    record.finish("success")  # the report sections, the page and the index, as at the end of a run
    return root / "experiments" / "handmade-abc123.html"


def test_page_screenshot_is_nontrivial(page, tmp_path):
    shot = tmp_path / "page.png"
    out = _chromium(tmp_path, f"--screenshot={shot}", page.as_uri())
    assert shot.exists(), f"chromium wrote no screenshot (rc {out.returncode}):\n{out.stderr[-3000:]}"
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2000)
    colors = image.getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 50, "the screenshot is (nearly) blank"
    # the plot's red marker (#d62728) and blue line (#1f77b4) were painted
    pixels = {c for _, c in colors}
    assert any(abs(r - 0xD6) < 12 and abs(g - 0x27) < 12 and abs(b - 0x28) < 12 for r, g, b in pixels)
    assert any(abs(r - 0x1F) < 12 and abs(g - 0x77) < 12 and abs(b - 0xB4) < 12 for r, g, b in pixels)


def test_rendered_dom_has_tables_and_plot(page, tmp_path):
    out = _chromium(tmp_path, "--dump-dom", page.as_uri())
    dom = out.stdout
    assert "</html>" in dom, f"chromium dumped no DOM (rc {out.returncode}):\n{out.stderr[-3000:]}"
    assert dom.count("<table class=\"report\"") >= 4  # results, conventions, training runs, fits, correlations
    assert "Results: model x metric" in dom and "SODA-base-600M (published)" in dom
    assert "<svg" in dom and 'id="isoflop-line"' in dom and "<figcaption>isoflop_curves.svg</figcaption>" in dom
    assert "PLUMBING RUN: " in dom
    assert 'href="https://wandb.ai/soda/isoflop/runs/tiny-a"' in dom


def test_index_page_renders_with_link(page, tmp_path):
    out = _chromium(tmp_path, "--dump-dom", (page.parent / "index.html").as_uri())
    assert 'href="handmade-abc123.html"' in out.stdout, out.stderr[-3000:]
