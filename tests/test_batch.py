"""Batch mode: folders and file lists, skip/overwrite, failures, reports, interrupts, jobs."""

from __future__ import annotations

import csv
import json
import os
import select
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import make_model, speech_like, write_audio
from typer.testing import CliRunner

from audiodenoise import batch
from audiodenoise.api import Denoiser
from audiodenoise.checkpoint import save_model
from audiodenoise.cli.denoise import app
from audiodenoise.errors import ConfigError
from audiodenoise.features import FeatureConfig
from audiodenoise.model import ModelConfig

# the inputs of the `tree` fixture, relative to its folder
TREE = ("a.wav", "b.wav", "sub/c.flac", "sub/deep/d.wav")


def run(*args) -> object:
    """``denoise ARGS`` through typer's runner (stderr kept apart)."""
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".part" in p.name]


@pytest.fixture
def tree(tmp_path) -> Path:
    """Nested folder: 16 kHz mono WAVs, a 44.1 kHz stereo FLAC, an 8 kHz 24-bit WAV, plus files to ignore."""
    root = tmp_path / "in"
    (root / "sub" / "deep").mkdir(parents=True)
    write_audio(root / "a.wav", speech_like(16000, 1.5, seed=1), 16000)
    write_audio(root / "b.wav", speech_like(16000, 1.0, seed=2), 16000)
    write_audio(root / "sub" / "c.flac", speech_like(44100, 1.0, seed=3, channels=2), 44100)
    write_audio(root / "sub" / "deep" / "d.wav", speech_like(8000, 1.2, seed=4), 8000, subtype="PCM_24")
    (root / "notes.txt").write_text("not audio, not picked up")
    (root / ".hidden.wav").write_text("hidden files are not walked")
    (root / "._a.wav").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    return root


def assert_same_audio_layout(src: Path, dst: Path, *, format: str | None = None) -> None:
    a, b = sf.info(str(src)), sf.info(str(dst))
    assert (b.samplerate, b.channels, b.frames) == (a.samplerate, a.channels, a.frames), dst
    assert b.format == (format or a.format)
    if format is None:
        assert b.subtype == a.subtype


# -- the folder tree ----------------------------------------------------------------------


def test_folder_is_mirrored_with_names_and_formats_kept(tree, tmp_path, tiny_model_file):
    out = tmp_path / "out"
    result = run(tree, out, "--model", tiny_model_file, "--jobs", 1)
    assert result.exit_code == 0, result.stderr
    assert files_under(out) == set(TREE)
    for rel in TREE:
        assert_same_audio_layout(tree / rel, out / rel)
    assert "4 of 4 files denoised, 0 failed, 0 skipped (already done)" in result.stderr
    assert result.stdout == ""


def test_format_converts_every_output(tree, tmp_path, tiny_model_file):
    out = tmp_path / "out"
    result = run(tree, out, "--model", tiny_model_file, "-j", 1, "--format", "FLAC", "-q")
    assert result.exit_code == 0, result.stderr
    assert files_under(out) == {str(Path(rel).with_suffix(".flac").as_posix()) for rel in TREE}
    for rel in TREE:
        assert_same_audio_layout(tree / rel, (out / rel).with_suffix(".flac"), format="FLAC")
    assert result.stderr == ""  # --quiet and nothing failed


def test_format_clash_in_one_folder_is_a_failure_not_an_overwrite(tmp_path, tiny_model_file):
    src = tmp_path / "in"
    src.mkdir()
    write_audio(src / "x.flac", speech_like(16000, 1.0, seed=1), 16000)
    write_audio(src / "x.wav", speech_like(16000, 1.5, seed=2), 16000)
    result = run(src, tmp_path / "out", "--model", tiny_model_file, "-j", 1, "--format", "wav")
    assert result.exit_code == 1
    assert "1 of 2 files denoised, 1 failed" in result.stderr
    assert "would also be written from x.flac" in result.stderr
    assert sf.info(str(tmp_path / "out" / "x.wav")).frames == 16000  # x.flac's (first by name)


def test_files_with_output_dir(tree, tmp_path, tiny_model_file):
    out = tmp_path / "out"
    result = run(tree / "a.wav", tree / "sub" / "c.flac", "-o", out, "--model", tiny_model_file, "-j", 1)
    assert result.exit_code == 0, result.stderr
    assert files_under(out) == {"a.wav", "c.flac"}
    assert_same_audio_layout(tree / "sub" / "c.flac", out / "c.flac")
    # one file with -o works too
    result = run(tree / "b.wav", "-o", out, "--model", tiny_model_file)
    assert result.exit_code == 0, result.stderr
    assert files_under(out) == {"a.wav", "b.wav", "c.flac"}


def test_files_with_output_dir_missing_and_clashing_names_fail_alone(tree, tmp_path, tiny_model_file):
    out = tmp_path / "out"
    other = tmp_path / "other"
    other.mkdir()
    write_audio(other / "a.wav", speech_like(16000, 1.0, seed=9), 16000)
    missing = tmp_path / "missing.wav"
    result = run(tree / "a.wav", missing, other / "a.wav", "-o", out, "--model", tiny_model_file, "-j", 1)
    assert result.exit_code == 1
    assert files_under(out) == {"a.wav"}
    assert sf.info(str(out / "a.wav")).frames == sf.info(str(tree / "a.wav")).frames  # the first a.wav
    assert f"  {missing}: file not found" in result.stderr
    assert f"  {other / 'a.wav'}: output {out / 'a.wav'} would also be written from {tree / 'a.wav'}" in result.stderr
    assert "1 of 3 files denoised, 2 failed, 0 skipped (already done)" in result.stderr


def test_folder_given_with_output_dir(tree, tmp_path, tiny_model_file):
    out = tmp_path / "out"
    result = run(tree, "-o", out, "--model", tiny_model_file, "-j", 1, "-q")
    assert result.exit_code == 0, result.stderr
    assert files_under(out) == set(TREE)


def test_output_folder_inside_input_folder_is_not_walked(tree, tiny_model_file):
    out = tree / "denoised"
    result = run(tree, out, "--model", tiny_model_file, "-j", 1, "-q")
    assert result.exit_code == 0, result.stderr
    assert files_under(out) == set(TREE)
    result = run(tree, out, "--model", tiny_model_file, "-j", 1)
    assert "0 of 4 files denoised, 0 failed, 4 skipped (already done)" in result.stderr


def test_single_file_mode_is_unchanged(tree, tmp_path, tiny_model_file):
    result = run(tree / "a.wav", tmp_path / "a.flac", "--model", tiny_model_file)
    assert result.exit_code == 0, result.stderr
    assert sf.info(str(tmp_path / "a.flac")).format == "FLAC"
    # three paths are three inputs, each written beside itself (a missing one fails on its own)
    result = run(tree / "a.wav", tmp_path / "x.wav", tmp_path / "y.wav", "--model", tiny_model_file)
    assert result.exit_code == 1
    assert "1 of 3 files denoised, 2 failed" in result.stderr and "x.wav: file not found" in result.stderr
    assert (tree / "a_denoised.wav").is_file() and not (tmp_path / "y.wav").exists()


# -- failures and reports ---------------------------------------------------------------------


@pytest.fixture
def mixed(tree) -> Path:
    """The tree plus a text file named .wav, an empty .flac and a truncated WAV."""
    (tree / "text.wav").write_text("this is not audio\n" * 20)
    (tree / "sub" / "empty.flac").write_bytes(b"")
    whole = write_audio(tree / "sub" / "truncated.wav", speech_like(16000, 1.0, seed=7), 16000)
    whole.write_bytes(whole.read_bytes()[: 44 + 6000])
    return tree


BAD = {"text.wav": "not a readable audio file", "sub/empty.flac": "file is empty", "sub/truncated.wav": "truncated"}


@pytest.mark.parametrize("report_name", ["report.json", "report.csv"])
def test_bad_files_are_reported_and_the_rest_written(mixed, tmp_path, tiny_model_file, report_name):
    out, report = tmp_path / "out", tmp_path / report_name
    result = run(mixed, out, "--model", tiny_model_file, "-j", 1, "--report", report)
    assert result.exit_code == 1
    assert files_under(out) == set(TREE)  # every good file, nothing for the bad ones
    assert "4 of 7 files denoised, 3 failed, 0 skipped (already done)" in result.stderr
    for rel, reason in BAD.items():
        line = next(ln for ln in result.stderr.splitlines() if ln.startswith(f"  {mixed / rel}: "))
        assert reason in line
    assert "Traceback" not in result.stderr
    assert not temp_files(out) and not temp_files(tmp_path)

    if report.suffix == ".json":
        data = json.loads(report.read_text())
        rows = data["files"]
        assert data["summary"] == {**data["summary"], "total": 7, "ok": 4, "failed": 3, "skipped": 0,
                                   "interrupted": False}
    else:
        with open(report, newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert list(rows[0]) == list(batch.REPORT_FIELDS)
    by_input = {Path(r["input"]).relative_to(mixed).as_posix(): r for r in rows}
    assert set(by_input) == set(TREE) | set(BAD)
    for rel in TREE:
        assert by_input[rel]["status"] == "ok"
        assert by_input[rel]["output"] == str(out / rel)
        assert float(by_input[rel]["audio_seconds"]) == pytest.approx(sf.info(str(mixed / rel)).duration, abs=1e-3)
    for rel, reason in BAD.items():
        assert by_input[rel]["status"] == "failed"
        assert reason in by_input[rel]["reason"]


def test_dangling_symlinks_and_fifos_named_like_audio_are_reported(tree, tmp_path, tiny_model_file):
    (tree / "gone.wav").symlink_to(tree / "deleted.wav")
    os.mkfifo(tree / "sub" / "pipe.flac")
    out, report = tmp_path / "out", tmp_path / "report.json"
    result = run(tree, out, "--model", tiny_model_file, "-j", 1, "--report", report)
    assert result.exit_code == 1
    assert "4 of 6 files denoised, 2 failed, 0 skipped (already done)" in result.stderr
    assert f"  {tree / 'gone.wav'}: is a dangling symlink (to {tree / 'deleted.wav'})" in result.stderr
    assert f"  {tree / 'sub' / 'pipe.flac'}: is a FIFO, not a regular file" in result.stderr
    rows = {Path(r["input"]).name: r for r in json.loads(report.read_text())["files"]}
    assert rows["gone.wav"]["status"] == rows["pipe.flac"]["status"] == "failed"
    assert "FIFO" in rows["pipe.flac"]["reason"] and "dangling symlink" in rows["gone.wav"]["reason"]
    assert files_under(out) == set(TREE)
    # given by name, a FIFO is named as one too (and is never opened, which would block)
    result = run(tree / "sub" / "pipe.flac", "-o", tmp_path / "out2", "--model", tiny_model_file, "-q")
    assert result.exit_code == 1 and "pipe.flac: is a FIFO, not a regular file" in result.stderr


def test_a_fifo_at_an_output_path_fails_instead_of_counting_as_done(tree, tmp_path, tiny_model_file):
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "a.wav")
    for flags in ([], ["-f"]):
        result = run(tree, out, "--model", tiny_model_file, "-j", 1, *flags)
        assert result.exit_code == 1
        assert f"  {tree / 'a.wav'}: exists and is a FIFO, not a regular file" in result.stderr
        assert os.path.exists(out / "a.wav") and not (out / "a.wav").is_file()  # still the FIFO


def test_report_inside_the_output_folder(tree, tmp_path, tiny_model_file):
    out = tmp_path / "out"
    result = run(tree, out, "--model", tiny_model_file, "-j", 1, "-q", "--report", out / "logs" / "report.csv")
    assert result.exit_code == 0, result.stderr
    assert files_under(out) == set(TREE) | {"logs/report.csv"}
    with open(out / "logs" / "report.csv", newline="") as fh:
        assert [r["status"] for r in csv.DictReader(fh)] == ["ok"] * 4


def test_nothing_to_do_is_an_error(tmp_path, tiny_model_file):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("x")
    result = run(tmp_path / "in", tmp_path / "out", "--model", tiny_model_file)
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()  # no progress bar, no summary: one line
    assert line.startswith("denoise: error: ") and "no audio files" in line


def test_bad_model_fails_before_any_work(tree, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    result = run(tree, tmp_path / "out", "--model", bad, "-j", 2)
    assert result.exit_code == 1
    assert result.stderr.startswith("denoise: error: ")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["{in}", "{file}"], "exists and is not a folder"),
        (["{in}", "{in}"], "is the input folder"),
        (["{in}/sub", "{in}"], "contains the input folder"),
        (["{in}/a.wav", "{in}/sub", "-o", "{out}"], "is a folder"),
        (["{in}", "{in}/b.wav", "-o", "{out}"], "is a folder"),
        (["{in}/a.wav", "{out}/a.wav", "--jobs", "2"], "--jobs apply to a folder"),
        (["{in}/a.wav", "{out}/a.wav", "--glob", "*.wav"], "--glob apply to a folder"),
        (["{in}", "{out}", "--format", "xyz"], "unknown output format"),
        (["{in}", "{out}", "--report", "{out}.txt"], "report must end in .json or .csv"),
        (["{in}", "{out}", "--report", "{file}/r.json"], "is not a folder"),
        (["{in}", "{out}", "--plot", "{tmp}/p.png"], "--plot works on a single file"),
        (["{in}", "{out}", "--glob", "/"], "empty pattern"),
        (["{in}", "{out}", "--jobs", "0"], "--jobs"),
    ],
)
def test_usage_errors_exit_2(tree, tmp_path, tiny_model_file, args, message):
    (tmp_path / "file.txt").write_text("x")
    names = {"in": tree, "out": tmp_path / "out", "file": tmp_path / "file.txt", "tmp": tmp_path}
    result = run(*[a.format(**names) for a in args], "--model", tiny_model_file)
    assert result.exit_code == 2, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "out").exists()


# -- resuming ------------------------------------------------------------------------------------


def test_existing_outputs_are_skipped_and_overwrite_redoes_them(tree, tmp_path, tiny_model_file):
    out = tmp_path / "out"
    assert run(tree, out, "--model", tiny_model_file, "-j", 1, "-q").exit_code == 0
    past = time.time() - 1000
    for rel in TREE:
        os.utime(out / rel, (past, past))
    before = {rel: (out / rel).stat().st_mtime_ns for rel in TREE}
    content = {rel: (out / rel).read_bytes() for rel in TREE}

    result = run(tree, out, "--model", tiny_model_file, "-j", 1, "--report", tmp_path / "r.json")
    assert result.exit_code == 0
    assert "0 of 4 files denoised, 0 failed, 4 skipped (already done)" in result.stderr
    assert {rel: (out / rel).stat().st_mtime_ns for rel in TREE} == before
    rows = json.loads((tmp_path / "r.json").read_text())["files"]
    assert [r["status"] for r in rows] == ["skipped"] * 4

    result = run(tree, out, "--model", tiny_model_file, "-j", 1, "--overwrite")
    assert result.exit_code == 0
    assert "4 of 4 files denoised, 0 failed, 0 skipped (already done)" in result.stderr
    for rel in TREE:
        assert (out / rel).stat().st_mtime_ns != before[rel]
        assert (out / rel).read_bytes() == content[rel]
    assert files_under(out) == set(TREE)


def test_partial_outputs_left_by_a_killed_worker_are_swept(tree, tmp_path, tiny_model_file):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    # today's temp names, and the longer form of earlier versions
    leftovers = [out / ".ad-k3x_9q2z.part", out / "sub" / ".ad-abcdefgh.part", out / ".a.wav.k3x_9q2z.part.wav",
                 out / "sub" / ".c.flac.abcdefgh.part.flac"]
    keep = [out / "notes.part.wav", out / ".other.wav.abc.part.wav", out / "sub" / ".c.flac.abcdefgh.part.wav",
            out / ".ad-abcdefgh.tmp", out / ".ad-abc.part", out / "sub" / "ad-abcdefgh.part"]
    for p in leftovers + keep:
        p.write_bytes(b"RIFF")
    result = run(tree, out, "--model", tiny_model_file, "-j", 1, "-q")
    assert result.exit_code == 0, result.stderr
    assert not any(p.exists() for p in leftovers)
    assert all(p.exists() for p in keep)
    assert files_under(out) == set(TREE) | {p.relative_to(out).as_posix() for p in keep}


# -- jobs -----------------------------------------------------------------------------------------


@pytest.fixture
def workers_only(monkeypatch):
    """Every file goes to the worker processes: no small-batch or warm-up shortcut in this process."""
    monkeypatch.setattr(batch, "SMALL_BATCH_SECONDS", -1.0)
    monkeypatch.setattr(batch, "WARMUP_MAX_SECONDS", -1.0)


# small: the batch is too small for workers; warm-up: this process denoises files while they start
@pytest.mark.parametrize("mode", ["workers", "warm-up", "small"])
def test_two_jobs_write_the_same_bytes_as_one(mixed, tmp_path, tiny_model_file, monkeypatch, mode):
    if mode != "small":
        monkeypatch.setattr(batch, "SMALL_BATCH_SECONDS", -1.0)
    if mode == "workers":
        monkeypatch.setattr(batch, "WARMUP_MAX_SECONDS", -1.0)
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = run(mixed, one, "--model", tiny_model_file, "-j", 1, "--report", tmp_path / "one.csv")
    r2 = run(mixed, two, "--model", tiny_model_file, "-j", 2, "--report", tmp_path / "two.csv")
    assert r1.exit_code == r2.exit_code == 1
    assert files_under(one) == files_under(two) == set(TREE)
    for rel in TREE:
        assert (one / rel).read_bytes() == (two / rel).read_bytes(), rel

    def outcomes(report):
        with open(report, newline="") as fh:
            return sorted((Path(r["input"]).name, r["status"], r["reason"]) for r in csv.DictReader(fh))

    assert outcomes(tmp_path / "one.csv") == outcomes(tmp_path / "two.csv")


def test_api_with_a_denoiser_instance_and_workers(tree, tmp_path, tiny_model_file, workers_only):
    denoiser = Denoiser.from_file(tiny_model_file, device="cpu")
    plan = batch.BatchPlan.from_folder(tree, tmp_path / "out", globs=["*.wav"])
    summary = batch.run_batch(plan, denoiser, jobs=2)
    assert (summary.ok, summary.failed, summary.skipped, summary.stopped) == (3, 0, 0, False)
    assert summary.audio_seconds == pytest.approx(1.5 + 1.0 + 1.2, abs=1e-3)
    assert files_under(tmp_path / "out") == {"a.wav", "b.wav", "sub/deep/d.wav"}


class CrashingDenoiser(Denoiser):
    """Kills its worker process on files named crash*."""

    def denoise_file(self, src, dst, **kwargs):
        if Path(src).name.startswith("crash"):
            os._exit(3)
        return super().denoise_file(src, dst, **kwargs)


def test_a_worker_crash_fails_that_file_only(tree, tmp_path, tiny_model_file, workers_only):
    write_audio(tree / "crash.wav", speech_like(16000, 1.0), 16000)
    plan = batch.BatchPlan.from_folder(tree, tmp_path / "out")
    summary = batch.run_batch(plan, partial(CrashingDenoiser.from_file, tiny_model_file, device="cpu"), jobs=2)
    assert (summary.ok, summary.failed, summary.stopped) == (4, 1, False)
    assert Path(summary.failures[0].src).name == "crash.wav"
    assert "worker process died" in summary.failures[0].reason
    assert files_under(tmp_path / "out") == set(TREE)


# -- patterns ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "globs, excludes, expected",
    [
        (["*.wav"], [], {"a.wav", "b.wav", "sub/deep/d.wav"}),
        (["*.flac", "a.*"], [], {"a.wav", "sub/c.flac"}),
        ([], ["sub"], {"a.wav", "b.wav"}),
        ([], ["**/deep/**"], {"a.wav", "b.wav", "sub/c.flac"}),
        ([], ["deep/**"], set(TREE)),  # with a slash, a pattern is anchored at the input folder
        ([], ["[ab].wav"], {"sub/c.flac", "sub/deep/d.wav"}),
        (["sub/**"], ["*.flac"], {"sub/deep/d.wav"}),
        (["**/d.wav", "./b.wav"], [], {"b.wav", "sub/deep/d.wav"}),
        (["sub/*"], [], {"sub/c.flac"}),
        (["notes.txt"], [], {"notes.txt"}),  # a glob can pick non-audio files (which then fail)
    ],
)
def test_glob_and_exclude(tree, globs, excludes, expected):
    plan = batch.BatchPlan.from_folder(tree, tree.parent / "out", globs=globs, excludes=excludes)
    assert {t.src.relative_to(tree).as_posix() for t in plan.tasks()} == expected
    assert plan.count() == len(expected)


def test_glob_and_exclude_on_the_command_line(tree, tmp_path, tiny_model_file):
    out = tmp_path / "out"
    result = run(tree, out, "--model", tiny_model_file, "-j", 1, "--glob", "*.wav", "--glob", "*.flac",
                 "--exclude", "deep", "--exclude", "b.*", "-q")
    assert result.exit_code == 0, result.stderr
    assert files_under(out) == {"a.wav", "sub/c.flac"}


def test_plan_is_lazy_and_sorted(tmp_path):
    root = tmp_path / "in"
    for name in ["b", "a/z", "a/b", "c"]:
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "x.wav").write_bytes(b"")
    plan = batch.BatchPlan.from_folder(root, tmp_path / "out")
    tasks = plan.tasks()
    first = next(tasks)
    assert first.src == root / "a" / "b" / "x.wav" and first.dst == tmp_path / "out" / "a" / "b" / "x.wav"
    assert [t.src.relative_to(root).as_posix() for t in tasks] == ["a/z/x.wav", "b/x.wav", "c/x.wav"]


def test_plan_rejects_bad_setups(tmp_path):
    with pytest.raises(ConfigError, match="folder not found"):
        batch.BatchPlan.from_folder(tmp_path / "nope", tmp_path / "out")
    with pytest.raises(ConfigError, match="unknown output format 'mp4'"):
        batch.BatchPlan.from_folder(tmp_path, tmp_path / "out", format="mp4")
    with pytest.raises(ConfigError, match="no input files"):
        batch.BatchPlan.from_files([], tmp_path / "out")


# -- interrupting ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_size_model_file(tmp_path_factory) -> Path:
    """The default architecture: slow enough that a batch is still running when it is interrupted."""
    path = tmp_path_factory.mktemp("full") / "full.safetensors"
    save_model(path, make_model(ModelConfig()), FeatureConfig())
    return path


def denoise_command(jobs: int) -> list[str]:
    """``denoise`` in a subprocess; with jobs > 1 every file goes to the workers."""
    force = "b.SMALL_BATCH_SECONDS = b.WARMUP_MAX_SECONDS = -1.0; " if jobs > 1 else ""
    code = f"import audiodenoise.batch as b; {force}from audiodenoise.cli.denoise import main; main()"
    return [sys.executable, "-c", code]


@pytest.mark.parametrize(
    "sig, jobs, to_group",
    [(signal.SIGINT, 2, True), (signal.SIGTERM, 2, False), (signal.SIGTERM, 1, False)],
    ids=["ctrl-c-jobs2", "sigterm-jobs2", "sigterm-jobs1"],
)
def test_interrupt_leaves_no_partial_file_and_a_rerun_finishes(tmp_path, full_size_model_file, sig, jobs, to_group):
    src, out = tmp_path / "in", tmp_path / "out"
    names = [f"part{i // 6}/f{i:02d}.wav" for i in range(12)]
    for i, rel in enumerate(names):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        write_audio(src / rel, speech_like(16000, 3.0, seed=i), 16000)
    proc = subprocess.Popen(
        denoise_command(jobs) + [str(src), str(out), "--model", str(full_size_model_file), "-j", str(jobs)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        # wait until one output is done and another is being written
        while not (any(out.rglob("f*.wav")) and temp_files(out)):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "batch did not start"
            time.sleep(0.005)
        if to_group:  # what a terminal's Ctrl-C does
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr
    assert "interrupted: " in stderr and "run the same command again" in stderr
    assert "Traceback" not in stderr
    assert not temp_files(out)
    done = files_under(out)
    assert done and done < set(names)  # stopped part way
    for rel in done:  # what is there is whole
        assert sf.info(str(out / rel)).frames == 3 * 16000

    result = run(src, out, "--model", full_size_model_file, "-j", 2)
    assert result.exit_code == 0, result.stderr
    assert f"{len(names) - len(done)} of {len(names)} files denoised, 0 failed, {len(done)} skipped" in result.stderr
    assert files_under(out) == set(names)
    assert not temp_files(out)
    for rel in names:
        wav, sample_rate = sf.read(str(out / rel))
        assert sample_rate == 16000 and wav.shape == (3 * 16000,) and np.isfinite(wav).all()


def live_processes_in_group(pgid: int) -> list[str]:
    """``pid comm`` of the processes (zombies aside) in process group ``pgid``."""
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat_file.read_text()
        except OSError:
            continue
        comm_end = text.rindex(")")
        state, _ppid, pgrp = text[comm_end + 2 :].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            found.append(f"{stat_file.parent.name} {text[text.index('(') + 1 : comm_end]}")
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_workers_exit_when_the_batch_is_killed_outright(tmp_path, full_size_model_file):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(12):
        write_audio(src / f"f{i:02d}.wav", speech_like(16000, 3.0, seed=i), 16000)
    proc = subprocess.Popen(
        denoise_command(2) + [str(src), str(out), "--model", str(full_size_model_file), "-j", "2", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not temp_files(out):  # the workers are up and writing
            assert proc.poll() is None and time.monotonic() < deadline, "batch did not start"
            time.sleep(0.01)
        assert len(live_processes_in_group(proc.pid)) >= 4  # the batch, the forkserver, two workers
        os.kill(proc.pid, signal.SIGKILL)  # the batch only, as the OOM killer would
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30  # before the fix they lived on for over ten minutes
        while live_processes_in_group(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert live_processes_in_group(proc.pid) == []
        # and nothing holds the command's stdout any more: a pipe after `denoise` ends
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        assert ready and proc.stdout.read() == b""
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.stdout.close()
