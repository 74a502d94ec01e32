"""The listening page of ``evaluate --html``, the CSV, and the page loaded in a real (headless) Chromium.

The browser test needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run``
installs them) and selenium (the ``dev`` extra); without them it is skipped and
says why.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import speech_like, write_audio
from typer.testing import CliRunner

from audiodenoise.cli.main import app
from audiodenoise.page import choose_pairs
from audiodenoise.report import PAGE_MARK

SR = 16000
SNRS = (-5, 0, 5, 15)
SECONDS = 2.0
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


@pytest.fixture(scope="module")
def evalset(tmp_path_factory) -> Path:
    """``root/{noisy,clean,other}/ID.flac`` and ``root/pairs.csv``; ``other`` is a second tool's outputs."""
    root = tmp_path_factory.mktemp("pageset")
    for sub in ("noisy", "clean", "other"):
        (root / sub).mkdir()
    lines = ["id,snr_db"]
    for i, snr_db in enumerate(SNRS):
        pair_id = f"p{i}_{snr_db:+d}dB"
        clean = speech_like(SR, SECONDS, seed=i)
        noise = np.random.default_rng(50 + i).standard_normal(clean.shape).astype(np.float32)
        noise *= np.sqrt(np.mean(clean**2) / np.mean(noise**2)) * 10 ** (-snr_db / 20)
        write_audio(root / "clean" / f"{pair_id}.flac", clean, SR)
        write_audio(root / "noisy" / f"{pair_id}.flac", np.clip(clean + noise, -1, 1), SR)
        write_audio(root / "other" / f"{pair_id}.flac", np.clip(clean + 0.3 * noise, -1, 1), SR)
        lines.append(f"{pair_id},{snr_db}")
    (root / "pairs.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def page(evalset, tiny_model_file, tmp_path_factory) -> Path:
    """The page of the tiny model and the ``other`` folder, 3 pairs to listen to, and its CSV."""
    out = tmp_path_factory.mktemp("page")
    result = CliRunner().invoke(app, [
        "evaluate", "--noisy", str(evalset / "noisy"), "--clean", str(evalset / "clean"),
        "--model", str(tiny_model_file), "--denoised", f"other={evalset / 'other'}",
        "--html", str(out / "page"), "--csv", str(out / "pairs.csv"), "--listen", "3", "--quiet",
    ])
    assert result.exit_code == 0, result.output
    return out / "page"


def test_page_folder_holds_the_index_and_its_media(page):
    text = (page / "index.html").read_text()
    assert PAGE_MARK in text
    media = sorted(p.name for p in (page / "media").iterdir())
    # 3 pairs x (noisy, model, other, clean) clips, each a FLAC and a PNG, plus the colour scale
    assert len([m for m in media if m.endswith(".flac")]) == 12
    assert len([m for m in media if m.endswith(".png")]) == 13
    assert "http://" not in text and "https://" not in text  # opens without a network
    for name in media:
        assert f"media/{name}" in text
    assert not list(page.parent.glob(".*"))  # no temp folder left beside it


def test_csv_has_one_row_per_pair_with_every_system(page):
    with open(page.parent / "pairs.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == sorted(f"p{i}_{s:+d}dB" for i, s in enumerate(SNRS))
    model = "audiodenoise (tiny.safetensors)"
    for row in rows:
        assert float(row[f"{model}.pesq_wb"]) > 1.0 and float(row["other.pesq_wb"]) > 1.0
        assert math.isfinite(float(row[f"{model}.noise_removed_db"]))  # measured for this project's model
        assert row["other.noise_removed_db"] == ""  # not measurable for another tool's files
    # the second tool kept 30 % of the noise amplitude: about 10 dB better SI-SDR than the input
    gains = [float(r["other.si_sdr"]) - float(r["noisy.si_sdr"]) for r in rows]
    assert all(8.0 < g < 12.0 for g in gains), gains


def test_choose_pairs_takes_worst_best_and_random():
    files = [{"id": f"f{i}", "noisy": {"pesq_wb": 1.0},
              "systems": {"m": {"processed": {"pesq_wb": 1.0 + i / 10}}}} for i in range(10)]
    report = {"files": files, "systems": [{"name": "m"}]}
    chosen = choose_pairs(report, 6)
    assert chosen[:2] == [("f0", "worst"), ("f1", "worst")]
    assert chosen[2:4] == [("f9", "best"), ("f8", "best")]
    assert [why for _, why in chosen[4:]] == ["random", "random"]
    assert len({i for i, _ in chosen}) == 6
    assert choose_pairs(report, 6) == chosen  # seeded
    assert len(choose_pairs(report, 50)) == 10


def test_html_refuses_an_input_folder_and_an_existing_foreign_folder(evalset, tmp_path):
    base = ["evaluate", "--noisy", str(evalset / "noisy"), "--clean", str(evalset / "clean"),
            "--denoised", str(evalset / "other"), "--quiet"]
    before = sorted(p.name for p in (evalset / "clean").iterdir())
    result = CliRunner().invoke(app, [*base, "--html", str(evalset / "clean"), "--overwrite"])
    assert result.exit_code == 1 and "is an input" in result.output
    result = CliRunner().invoke(app, [*base, "--html", str(evalset), "--overwrite"])
    assert result.exit_code == 1 and "holding the input" in result.output
    assert sorted(p.name for p in (evalset / "clean").iterdir()) == before
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    result = CliRunner().invoke(app, [*base, "--html", str(foreign), "--overwrite"])
    assert result.exit_code == 1 and "holds other files" in result.output
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_csv_and_html_are_not_replaced_without_overwrite(evalset, tmp_path):
    base = ["evaluate", "--noisy", str(evalset / "noisy"), "--clean", str(evalset / "clean"),
            "--denoised", str(evalset / "other"), "--quiet", "--listen", "0"]
    pairs_before = (evalset / "pairs.csv").read_text()
    result = CliRunner().invoke(app, [*base, "--csv", str(evalset / "pairs.csv"), "--overwrite"])  # the input
    assert result.exit_code == 1 and "CSV path is the input file" in result.output
    assert (evalset / "pairs.csv").read_text() == pairs_before
    existing = tmp_path / "pairs.csv"
    existing.write_text("old\n")
    os.chmod(existing, 0o600)
    result = CliRunner().invoke(app, [*base, "--csv", str(existing)])
    assert result.exit_code == 1 and "already exists" in result.output
    assert existing.read_text() == "old\n"
    result = CliRunner().invoke(app, [*base, "--csv", str(existing), "--html", str(tmp_path / "page"), "-f"])
    assert result.exit_code == 0, result.output
    assert existing.read_text().startswith("id,snr_db,") and existing.stat().st_mode & 0o777 == 0o600
    (tmp_path / "page" / "index.html").write_text(PAGE_MARK + " an older page")
    result = CliRunner().invoke(app, [*base, "--html", str(tmp_path / "page")])
    assert result.exit_code == 1 and "already exists" in result.output
    result = CliRunner().invoke(app, [*base, "--html", str(tmp_path / "page"), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert "an older page" not in (tmp_path / "page" / "index.html").read_text()
    assert not list(tmp_path.glob(".*"))


# -- in a real browser -------------------------------------------------------------


def _browser(tmp_path: Path):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[dev]')")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install chromium "
                    "chromium-driver; .ci/run does it)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    options.add_argument("--window-size=1400,1800")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


def _wait_for(browser, script: str, *, limit_s: float = 60.0):
    """Poll ``script`` until it returns true (media metadata loads asynchronously)."""
    deadline = time.monotonic() + limit_s
    while not browser.execute_script(script):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_page_in_chromium_plays_shows_and_sorts(page, tmp_path):
    browser = _browser(tmp_path)
    try:
        browser.get((page / "index.html").resolve().as_uri())
        loaded = _wait_for(browser, "return Array.from(document.querySelectorAll('audio'))"
                                    ".every(a => a.readyState >= 1 || a.error) && "
                                    "Array.from(document.images).every(i => i.complete)")
        assert loaded, "audio metadata or images did not load"
        audio = browser.execute_script(
            "return Array.from(document.querySelectorAll('audio')).map(a => [a.src, a.duration, !!a.error])")
        assert len(audio) == 12
        for src, duration, error in audio:
            assert not error, src
            assert duration == pytest.approx(SECONDS, abs=0.01), src  # decoded: a finite, right duration
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.src, i.naturalWidth, i.naturalHeight])")
        assert len(images) == 13
        for src, width, height in images:
            assert width > 0 and height > 0, src

        def column(index: int) -> list[str]:
            return browser.execute_script(
                f"return Array.from(document.querySelectorAll('#files tbody tr'))"
                f".map(r => r.cells[{index}].dataset.v)")

        headers = browser.find_elements("css selector", "#files th")
        labels = [h.text for h in headers]
        pesq = labels.index("noisy PESQ-WB")
        snr = labels.index("SNR dB")
        headers[pesq].click()
        ascending = [float(v) for v in column(pesq)]
        assert ascending == sorted(ascending) and ascending != sorted(ascending, reverse=True)
        headers[pesq].click()
        assert [float(v) for v in column(pesq)] == sorted(ascending, reverse=True)
        headers[snr].click()
        assert [float(v) for v in column(snr)] == sorted(float(s) for s in SNRS)
        browser.save_screenshot(str(tmp_path / "page.png"))
        if os.environ.get("AUDIODENOISE_SCREENSHOT"):  # to look at it: AUDIODENOISE_SCREENSHOT=shot.png pytest ...
            shutil.copy(tmp_path / "page.png", os.environ["AUDIODENOISE_SCREENSHOT"])
        errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == []
    finally:
        browser.quit()
