"""Every file the tool writes: never an input, never an existing file without --overwrite, never a
non-regular file, names and paths within the system's limits, written atomically with the replaced
file's mode kept. Audio outputs, --plot, --report and evaluate --out all go through one check."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import speech_like, write_audio
from typer.testing import CliRunner

from audiodenoise import outputs
from audiodenoise.cli.denoise import app as denoise_app
from audiodenoise.cli.main import app as main_app
from audiodenoise.errors import OutputError


def denoise(*args):
    return CliRunner().invoke(denoise_app, [str(a) for a in args])


def one_error_line(result, match: str, *, prog: str = "denoise", code: int = 1) -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), result.stderr
    assert match in lines[0], lines[0]
    return lines[0]


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def src(tmp_path) -> Path:
    (tmp_path / "in").mkdir()
    return write_audio(tmp_path / "in" / "in.wav", speech_like(16000, 0.5), 16000, "PCM_16")


# -- the check itself ------------------------------------------------------------------------------


def test_an_input_is_recognised_through_a_symlink_or_a_hard_link(tmp_path, src):
    (tmp_path / "link.wav").symlink_to(src)
    os.link(src, tmp_path / "hard.wav")
    for alias in ("link.wav", "hard.wav"):
        with pytest.raises(OutputError, match="output path is the input file"):
            outputs.check_output(tmp_path / alias, overwrite=True, inputs=[src])


def test_a_planned_output_is_not_reused(tmp_path):
    with pytest.raises(OutputError, match="plot path is also the output"):
        outputs.check_output(tmp_path / "x" / ".." / "a.png", planned=[tmp_path / "a.png"], what="plot")


@pytest.mark.parametrize("kind", ["fifo", "device", "folder", "dangling symlink"])
def test_non_regular_targets_are_refused_even_with_overwrite(tmp_path, kind):
    target = tmp_path / "out.wav"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "device":
        target.symlink_to("/dev/null")
    elif kind == "folder":
        target.mkdir()
    else:
        target.symlink_to(tmp_path / "nowhere.wav")
    match = {"fifo": "is a FIFO", "device": "is a character device", "folder": "is a folder",
             "dangling symlink": "is a dangling symlink"}[kind]
    with pytest.raises(OutputError, match=match):
        outputs.check_output(target, overwrite=True)


def test_name_and_path_limits_count_in_bytes_and_include_the_temp_file(tmp_path):
    outputs.check_output(tmp_path / ("é" * 125 + ".wav"))  # 129 characters, 254 bytes: fine
    with pytest.raises(OutputError, match=r"file name is 258 bytes"):
        outputs.check_output(tmp_path / ("é" * 127 + ".wav"))  # 131 characters, 258 bytes
    with pytest.raises(OutputError, match=r"file name is 256 bytes, longer than the file system's 255-byte limit"):
        outputs.check_output(tmp_path / ("a" * 252 + ".wav"))
    deep = tmp_path / "/".join(["d" * 200] * 25) / "out.wav"
    with pytest.raises(OutputError, match=r"path is \d+ bytes, too long .*4096-byte limit") as info:
        outputs.check_output(deep)
    assert len(str(info.value)) < 400  # the message shows a shortened path


def test_an_output_folder_is_checked_like_an_output_file(tmp_path):
    (tmp_path / "corpus" / "sub").mkdir(parents=True)
    (tmp_path / "file").write_text("x")
    os.mkfifo(tmp_path / "fifo")
    outputs.check_output_dir(tmp_path / "new" / "dataset", inputs=[tmp_path / "corpus"])  # made later: fine
    outputs.check_output_dir(tmp_path / "corpus2", inputs=[tmp_path / "corpus"])
    cases = {
        tmp_path / "file": "exists and is a file; the output folder must be a folder",
        tmp_path / "fifo": "exists and is a FIFO",
        tmp_path / "file" / "dataset": "file is not a folder",
        tmp_path / "corpus": "is the input folder",
        tmp_path / "corpus" / "sub" / "out": "is inside the input folder",
        tmp_path: "contains the input folder",
        tmp_path / ("d" * 256): "a folder name is 256 bytes",
    }
    for path, match in cases.items():
        with pytest.raises(OutputError, match=match):
            outputs.check_output_dir(path, inputs=[tmp_path / "corpus"])


def test_the_atomic_writer_keeps_the_mode_of_a_replaced_file(tmp_path):
    target = tmp_path / "secret.json"
    target.write_text("old")
    target.chmod(0o600)
    outputs.write_text(target, "new")
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert names(tmp_path) == ["secret.json"]  # no temp file left
    fresh = tmp_path / "fresh.json"
    outputs.write_text(fresh, "x")
    assert stat.S_IMODE(fresh.stat().st_mode) == outputs.new_file_mode()


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with outputs.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old" and names(tmp_path) == ["r.json"]


# -- denoise IN OUT -------------------------------------------------------------------------------


def test_overwrite_keeps_the_mode_of_the_replaced_output(tmp_path, src, tiny_model_file):
    dst = tmp_path / "out.wav"
    dst.write_bytes(b"old")
    dst.chmod(0o600)
    result = denoise(src, dst, "--model", tiny_model_file, "-f", "-q")
    assert result.exit_code == 0, result.stderr
    assert sf.info(str(dst)).frames == 8000
    assert stat.S_IMODE(dst.stat().st_mode) == 0o600


def test_overwrite_onto_a_fifo_is_refused_and_the_fifo_kept(tmp_path, src, tiny_model_file):
    fifo = tmp_path / "out.wav"
    os.mkfifo(fifo)
    one_error_line(denoise(src, fifo, "--model", tiny_model_file, "-f"), "out.wav: exists and is a FIFO")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert names(tmp_path) == ["in", "out.wav"]


def test_a_long_legal_output_name_is_written(tmp_path, src, tiny_model_file):
    dst = tmp_path / ("n" * 251 + ".wav")  # 255 bytes: the temp name must not be longer
    result = denoise(src, dst, "--model", tiny_model_file, "-q")
    assert result.exit_code == 0, result.stderr
    assert sf.info(str(dst)).frames == 8000


def test_an_output_path_beyond_path_max_is_one_line(tmp_path, src, tiny_model_file):
    dst = tmp_path / "/".join(["d" * 250] * 20) / "out.wav"
    line = one_error_line(denoise(src, dst, "--model", tiny_model_file), "too long for the system's 4096-byte limit")
    assert len(line) < 400
    assert names(tmp_path) == ["in"]


# -- --plot ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["format", "place", "exists"])
def test_a_bad_plot_path_fails_before_the_audio_is_written(tmp_path, src, tiny_model_file, case):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "old.png").write_bytes(b"old picture")
    dst = tmp_path / "out.wav"
    plot, match = {
        "format": (tmp_path / "p.xyz", "cannot write a plot as 'xyz'"),
        "place": (tmp_path / "file.txt" / "p.png", "file.txt is not a folder"),
        "exists": (tmp_path / "old.png", "old.png: already exists"),
    }[case]
    one_error_line(denoise(src, dst, "--model", tiny_model_file, "--plot", plot), match)
    assert not dst.exists()  # nothing was written, so the corrected rerun is not refused
    assert (tmp_path / "old.png").read_bytes() == b"old picture"
    assert names(tmp_path) == ["file.txt", "in", "old.png"]


def test_plot_with_overwrite_replaces_a_picture(tmp_path, src, tiny_model_file):
    old = tmp_path / "p.png"
    old.write_bytes(b"old picture")
    result = denoise(src, tmp_path / "out.wav", "--model", tiny_model_file, "--plot", old, "-f", "-q")
    assert result.exit_code == 0, result.stderr
    assert old.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert names(tmp_path) == ["in", "out.wav", "p.png"]


# -- batch --report --------------------------------------------------------------------------------


def test_an_existing_batch_report_needs_overwrite(tmp_path, src, tiny_model_file):
    report = tmp_path / "report.json"
    report.write_text("mine")
    out = tmp_path / "out"
    result = denoise(src.parent, out, "--model", tiny_model_file, "--report", report, "-q")
    one_error_line(result, "report.json: already exists; pass --overwrite", code=2)
    assert report.read_text() == "mine" and not out.exists()
    report.chmod(0o640)
    result = denoise(src.parent, out, "--model", tiny_model_file, "--report", report, "-q", "-f")
    assert result.exit_code == 0, result.stderr
    assert json.loads(report.read_text())["summary"]["ok"] == 1
    assert stat.S_IMODE(report.stat().st_mode) == 0o640


# -- evaluate --out --------------------------------------------------------------------------------


@pytest.fixture
def evalset(tmp_path) -> Path:
    root = tmp_path / "eval"
    for folder in ("noisy", "clean"):
        (root / folder).mkdir(parents=True)
    clean = speech_like(16000, 1.5)
    noise = 0.05 * np.random.default_rng(0).standard_normal(clean.shape).astype(np.float32)
    write_audio(root / "clean" / "a.flac", clean, 16000)
    write_audio(root / "noisy" / "a.flac", clean + noise, 16000)
    return root


def evaluate(root: Path, *args):
    return CliRunner().invoke(main_app, ["evaluate", "--noisy", str(root / "noisy"), "--clean", str(root / "clean"),
                                         "--denoised", str(root / "noisy"), "-q", *map(str, args)])


def test_evaluate_out_never_replaces_an_input_even_with_overwrite(evalset):
    reference = evalset / "clean" / "a.flac"
    before = reference.read_bytes()
    one_error_line(evaluate(evalset, "--out", reference, "-f"), "report path is the input file",
                   prog="audiodenoise evaluate")
    assert reference.read_bytes() == before


def test_evaluate_out_needs_overwrite_and_keeps_the_mode(evalset):
    out = evalset / "report.json"
    out.write_text("mine")
    one_error_line(evaluate(evalset, "--out", out), "already exists; pass --overwrite", prog="audiodenoise evaluate")
    assert out.read_text() == "mine"
    out.chmod(0o600)
    result = evaluate(evalset, "--out", out, "--overwrite")
    assert result.exit_code == 0, result.stderr
    assert json.loads(out.read_text())["n_pairs"] == 1
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
