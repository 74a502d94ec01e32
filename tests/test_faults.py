"""Faults: a full disk, a killed or interrupted process, hostile model files.

Whatever happens, the input is never touched, the output name never holds a partial file, and
no code from a model file runs.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import make_model, speech_like, write_audio
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from typer.testing import CliRunner

from audiodenoise import runs
from audiodenoise.api import Denoiser
from audiodenoise.checkpoint import save_model
from audiodenoise.cli.denoise import app
from audiodenoise.errors import AudioError, TrainingError
from audiodenoise.features import FeatureConfig

# AtomicWriter's temp file, short whatever the output's name: ".ad-<8 random chars>.part"
TEMP_NAME = re.compile(r"\.ad-[a-z0-9_]{8}\.part")
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def run_cli(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_error_line(result, match: str) -> str:
    assert result.exit_code == 1, (result.exit_code, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("denoise: error: "), result.stderr
    assert match in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def layout(tmp_path) -> tuple[Path, Path]:
    """A 3 s stereo input in its own folder, and an empty output folder."""
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    src = write_audio(tmp_path / "in" / "take.wav", speech_like(16000, 3.0, channels=2), 16000, "PCM_16")
    return src, tmp_path / "out"


@pytest.fixture
def small_chunks(monkeypatch):
    """0.5 s chunks, so a 3 s file is written in several blocks."""
    monkeypatch.setitem(Denoiser.__init__.__kwdefaults__, "chunk_seconds", 0.5)


# -- (a) disk full ----------------------------------------------------------------------------------


def _fail_soundfile(monkeypatch, method: str, *, on_call: int) -> list[str]:
    """``soundfile.SoundFile.<method>`` raises ENOSPC on call number ``on_call`` (after doing its work)."""
    original = getattr(sf.SoundFile, method)
    calls = []

    def failing(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if self.mode == "w":
            calls.append(os.fsdecode(self.name))  # paths reach soundfile as bytes (non-UTF-8 names)
            if len(calls) == on_call:
                raise ENOSPC
        return result

    monkeypatch.setattr(sf.SoundFile, method, failing)
    return calls


@pytest.mark.parametrize("method, on_call", [("write", 2), ("close", 1)], ids=["second-block", "final-flush"])
@pytest.mark.parametrize("ext", ["wav", "flac"])
def test_disk_full_leaves_no_output_and_names_it(layout, small_chunks, monkeypatch, method, on_call, ext):
    src, out = layout
    before = src.read_bytes()
    calls = _fail_soundfile(monkeypatch, method, on_call=on_call)
    with pytest.raises(AudioError, match=f"out.{ext}: write failed .*No space left on device"):
        Denoiser(make_model(), FeatureConfig(), device="cpu").denoise_file(src, out / f"out.{ext}")
    assert len(calls) == on_call and TEMP_NAME.fullmatch(Path(calls[0]).name)  # it was the temp file
    assert os.listdir(out) == []  # no output, no temp file
    assert src.read_bytes() == before


def test_disk_full_on_the_command_line(layout, small_chunks, monkeypatch, tiny_model_file):
    src, out = layout
    before = src.read_bytes()
    _fail_soundfile(monkeypatch, "write", on_call=2)
    line = assert_one_error_line(run_cli(src, out / "take.wav", "--model", tiny_model_file), "No space left on device")
    assert str(out / "take.wav") in line
    assert os.listdir(out) == [] and src.read_bytes() == before


def test_disk_full_on_overwrite_keeps_the_previous_output(layout, small_chunks, monkeypatch, tiny_model_file):
    src, out = layout
    (out / "take.wav").write_bytes(b"previous output")
    _fail_soundfile(monkeypatch, "write", on_call=2)
    assert_one_error_line(run_cli(src, out / "take.wav", "--model", tiny_model_file, "--overwrite"), "No space left")
    assert os.listdir(out) == ["take.wav"] and (out / "take.wav").read_bytes() == b"previous output"


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 256 KiB tmpfs (needs root and mount permission; skipped otherwise)."""
    mount_point = tmp_path / "tiny_disk"
    mount_point.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs", str(mount_point)],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here ({exc})")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], capture_output=True, timeout=30)


@pytest.mark.parametrize("ext", ["wav", "flac"])
def test_real_full_disk(tmp_path, tiny_disk, tiny_model_file, ext):
    # 20 s of noise: 640 kB as WAV, still well over 256 kB as FLAC
    noise = (0.3 * np.random.default_rng(0).standard_normal((1, 20 * 16000))).astype(np.float32)
    src = write_audio(tmp_path / "noise.wav", noise, 16000, "PCM_16")
    before = src.read_bytes()
    line = assert_one_error_line(run_cli(src, tiny_disk / f"out.{ext}", "--model", tiny_model_file, "-q"),
                                 "write failed (no space left on device")
    assert str(tiny_disk / f"out.{ext}") in line
    assert os.listdir(tiny_disk) == []  # the temp file is gone too: the space is given back
    assert src.read_bytes() == before


# -- (b) a killed or interrupted process ------------------------------------------------------------


def _denoise_process(src: Path, dst: Path, model: Path, *extra: str) -> subprocess.Popen:
    """``denoise SRC DST`` in a subprocess, in 0.25 s chunks paced at 0.2 s each, so a signal always
    arrives mid-file however fast the machine is (240 chunks: about 50 s if left alone)."""
    # a runner started as a background job passes SIGINT on as ignored, and Python then installs no
    # Ctrl-C handler: restore the one a foreground terminal gives
    code = (
        "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "import time; from audiodenoise.api import Denoiser; "
        "Denoiser.__init__.__kwdefaults__['chunk_seconds'] = 0.25; "
        "segment = Denoiser._denoise_segment; "
        "Denoiser._denoise_segment = lambda self, *a: (time.sleep(0.2), segment(self, *a))[1]; "
        "from audiodenoise.cli.denoise import main; main()"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, str(src), str(dst), "--model", str(model), "-q", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _wait_for_temp_file(proc: subprocess.Popen, folder: Path, timeout: float = 120.0) -> Path:
    deadline = time.monotonic() + timeout
    while True:
        temps = [p for p in folder.iterdir() if TEMP_NAME.fullmatch(p.name)]
        if temps and temps[0].stat().st_size > 0:
            return temps[0]
        assert proc.poll() is None, ("finished before it could be stopped", proc.communicate())
        assert time.monotonic() < deadline, "no temp file appeared"
        time.sleep(0.005)


@pytest.fixture
def long_input(tmp_path) -> tuple[Path, Path]:
    """60 s of 48 kHz stereo in its own folder, and an empty output folder."""
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    src = write_audio(tmp_path / "in" / "long.wav", speech_like(48000, 60.0, channels=2), 48000, "PCM_16")
    return src, tmp_path / "out"


def test_sigkill_never_leaves_a_partial_output_and_a_batch_sweeps_the_temp_file(long_input, tiny_model_file):
    src, out = long_input
    before = src.read_bytes()
    dst = out / "long.wav"
    proc = _denoise_process(src, dst, tiny_model_file)
    try:
        temp = _wait_for_temp_file(proc, out)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert not dst.exists()  # the output name never holds a partial file
    assert src.read_bytes() == before
    # SIGKILL cannot be caught: the temp file (hidden, short) stays behind ...
    assert [p.name for p in out.iterdir()] == [temp.name]
    assert TEMP_NAME.fullmatch(temp.name)
    # ... until a batch writes to that folder: it sweeps such leftovers and finishes the work
    result = run_cli(src, "-o", out, "--model", tiny_model_file, "-q")
    assert result.exit_code == 0, result.stderr
    assert os.listdir(out) == ["long.wav"]
    assert sf.info(str(dst)).frames == 60 * 48000
    assert src.read_bytes() == before


def test_ctrl_c_while_the_output_is_being_opened_leaves_no_temp_file(tmp_path, monkeypatch):
    # the window the signal tests hit on a loaded machine: the temp file exists (header written), the
    # with block has not begun, so only AtomicWriter.__enter__ can remove it
    from audiodenoise import audio

    real_open = audio.open_sound

    def open_then_interrupt(path, *args, **kwargs):
        real_open(path, *args, **kwargs).close()
        raise KeyboardInterrupt

    monkeypatch.setattr(audio, "open_sound", open_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        with audio.AtomicWriter(tmp_path / "out.wav", sample_rate=16000, channels=1, format="WAV", subtype="PCM_16"):
            pass
    assert os.listdir(tmp_path) == []


def test_ctrl_c_while_the_output_is_closed_leaves_no_temp_file(tmp_path, monkeypatch):
    from audiodenoise import audio

    writer = audio.AtomicWriter(tmp_path / "out.wav", sample_rate=16000, channels=1, format="WAV", subtype="PCM_16")
    with pytest.raises(KeyboardInterrupt):
        with writer:
            writer.write(np.zeros((1, 160), np.float32))
            real_close = writer._fh.close
            monkeypatch.setattr(writer._fh, "close", lambda: (real_close(), (_ for _ in ()).throw(KeyboardInterrupt)))
    assert os.listdir(tmp_path) == []


def test_ctrl_c_right_after_the_temp_file_is_made_removes_it(tmp_path, monkeypatch):
    from audiodenoise import outputs

    real_close = os.close
    monkeypatch.setattr(outputs.os, "close", lambda fd: (real_close(fd), (_ for _ in ()).throw(KeyboardInterrupt)))
    with pytest.raises(KeyboardInterrupt):
        outputs.make_temp(tmp_path / "out.wav", suffix=outputs.AUDIO_TEMP_SUFFIX)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_sigint_or_sigterm_exits_130_and_leaves_nothing(long_input, tiny_model_file, sig):
    src, out = long_input
    before = src.read_bytes()
    proc = _denoise_process(src, out / "long.wav", tiny_model_file)
    try:
        _wait_for_temp_file(proc, out)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr
    assert stderr == "denoise: error: interrupted; no partial output was left\n"
    assert os.listdir(out) == []
    assert src.read_bytes() == before


def test_a_model_failing_mid_file_with_nan_leaves_nothing(layout, small_chunks, monkeypatch, tiny_model_file):
    # a last guard behind the load-time weight check: NaN never reaches the output file
    src, out = layout
    original = Denoiser.mask
    calls = []

    def nan_on_second_chunk(self, wav):
        calls.append(1)
        mask = original(self, wav)
        return mask * float("nan") if len(calls) == 2 else mask

    monkeypatch.setattr(Denoiser, "mask", nan_on_second_chunk)
    assert_one_error_line(run_cli(src, out / "take.wav", "--model", tiny_model_file), "produced NaN or infinite")
    assert len(calls) == 2 and os.listdir(out) == []


# -- (c) hostile or broken model files on the command line ------------------------------------------


class _Payload:
    """Unpickling this runs code: it creates the file ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _pickle_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": make_model().state_dict(), "config": _Payload(marker)}, path)
    return path


def test_the_pickle_payload_is_live(tmp_path):
    # the control: torch.load without weights_only runs the payload
    marker = tmp_path / "payload-ran"
    torch.load(_pickle_checkpoint(tmp_path / "model.pt", marker), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("name", ["model.safetensors", "model.pt", "model.ckpt"])
def test_a_pickle_model_is_refused_by_the_cli_and_never_run(layout, name):
    src, out = layout
    marker = src.parent.parent / "payload-ran"
    model = _pickle_checkpoint(src.parent.parent / name, marker)
    assert_one_error_line(run_cli(src, out / "take.wav", "--model", model), "not a valid audiodenoise model file")
    assert not marker.exists()
    assert os.listdir(out) == []


def _nan_weight_model(path: Path) -> Path:
    model = make_model()
    with torch.no_grad():
        model.encoder[0][0].weight[0, 0, 0] = float("nan")
    save_model(path, model, FeatureConfig())
    return path


def _newer_format(path: Path, source: Path) -> Path:
    data = source.read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    metadata = json.loads(data[8 : 8 + header_len])["__metadata__"]
    path.write_bytes(st_save(st_load(data), metadata={**metadata, "format_version": "99"}))
    return path


BAD_MODELS = {
    "nan-weight": (lambda p, good: _nan_weight_model(p), "weight encoder.0.0.weight holds NaN or infinite values"),
    "truncated": (lambda p, good: (p.write_bytes(good.read_bytes()[:5000]), p)[1], "not a valid audiodenoise model"),
    "newer-format": (_newer_format, "model format version 99 is newer than this audiodenoise"),
    "empty": (lambda p, good: (p.write_bytes(b""), p)[1], "not a valid audiodenoise model file"),
    "missing": (lambda p, good: p, "model file not found"),
}


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_a_broken_model_is_named_by_the_cli(layout, tiny_model_file, case):
    src, out = layout
    make, match = BAD_MODELS[case]
    model = make(src.parent.parent / "model.safetensors", tiny_model_file)
    line = assert_one_error_line(run_cli(src, out / "take.wav", "--model", model), match)
    assert line.startswith(f"denoise: error: {model}: ")
    assert os.listdir(out) == []


def test_a_pickle_payload_in_a_training_checkpoint_is_never_run(tmp_path):
    # resuming reads the run's own .pt checkpoints with weights_only=True: a planted one is refused
    marker = tmp_path / "payload-ran"
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    planted = tmp_path / "run" / "checkpoints" / "step-00000001.pt"
    torch.save({"model": make_model().state_dict(), "state": _Payload(marker)}, planted)
    model = make_model()
    messages = []
    with pytest.raises(TrainingError, match="every checkpoint is unreadable"):
        runs.load_latest_checkpoint(tmp_path / "run", lambda payload: model.load_state_dict(payload["model"]),
                                    messages.append)
    assert not marker.exists()
    assert any("step-00000001.pt is unreadable" in m for m in messages)
