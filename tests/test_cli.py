"""The `denoise` command: exit codes, one-line errors, nothing written on failure, the options."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import make_model, speech_like, write_audio
from typer.testing import CliRunner

from audiodenoise import __version__, outputs
from audiodenoise.api import Denoiser
from audiodenoise.checkpoint import save_model
from audiodenoise.cli.denoise import app
from audiodenoise.features import FeatureConfig


def run(*args) -> object:
    """Invoke ``denoise`` in-process; stdout and stderr are kept apart."""
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_error_line(result, match: str = "") -> str:
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("denoise: error: "), lines[0]
    assert match in lines[0], lines[0]
    assert result.stdout == ""
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: (p.read_bytes() if p.is_file() else b"<dir>") for p in sorted(folder.iterdir())}


@pytest.fixture
def src(tmp_path) -> Path:
    return write_audio(tmp_path / "in.wav", speech_like(16000, 0.5, channels=2), 16000, "PCM_16")


# -- success -------------------------------------------------------------------------------


def test_denoise_a_file(tmp_path, src, tiny_model_file):
    result = run(src, tmp_path / "out.wav", "--model", tiny_model_file)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith("wrote ") and "16000 Hz, 2 ch" in result.stderr
    info = sf.info(str(tmp_path / "out.wav"))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 2, 8000, "PCM_16")


def test_quiet_prints_nothing_on_success(tmp_path, src, tiny_model_file):
    result = run(src, tmp_path / "out.flac", "--model", tiny_model_file, "--quiet")
    assert result.exit_code == 0
    assert result.stderr == "" and result.stdout == ""
    assert sf.info(str(tmp_path / "out.flac")).format == "FLAC"


def test_progress_bar_on_long_files_unless_quiet(tmp_path, tiny_model_file):
    long_src = write_audio(tmp_path / "long.wav", speech_like(8000, 6.0), 8000)
    shown = run(long_src, tmp_path / "a.wav", "--model", tiny_model_file)
    assert shown.exit_code == 0 and "long.wav:" in shown.stderr and "/6.0 s" in shown.stderr
    hidden = run(long_src, tmp_path / "b.wav", "--model", tiny_model_file, "-q")
    assert hidden.exit_code == 0 and hidden.stderr == ""


def test_version():
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"audiodenoise {__version__}"


def test_plot_writes_a_png(tmp_path, src, tiny_model_file):
    png = tmp_path / "plots" / "before_after.png"
    result = run(src, tmp_path / "out.wav", "--model", tiny_model_file, "--plot", png, "-q")
    assert result.exit_code == 0, result.stderr
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_shorter_than_one_stft_frame(tmp_path, tiny_model_file):
    short = write_audio(tmp_path / "short.wav", np.full((1, 5), 0.2, np.float32), 44100, "PCM_24")
    result = run(short, tmp_path / "out.wav", "--model", tiny_model_file, "-q")
    assert result.exit_code == 0, result.stderr
    info = sf.info(str(tmp_path / "out.wav"))
    assert (info.frames, info.samplerate, info.subtype) == (5, 44100, "PCM_24")


def test_digital_silence_gives_silence(tmp_path, tiny_model_file):
    silent = write_audio(tmp_path / "silent.wav", np.zeros((2, 24000), np.float32), 48000, "PCM_16")
    result = run(silent, tmp_path / "out.wav", "--model", tiny_model_file, "-q")
    assert result.exit_code == 0, result.stderr
    out, _ = sf.read(str(tmp_path / "out.wav"), dtype="int16")
    assert out.shape == (24000, 2) and not out.any()


def test_full_scale_clipping_stays_in_range(tmp_path, tiny_model_file):
    t = np.arange(16000) / 16000
    clipped = np.clip(3 * np.sin(2 * np.pi * 220 * t), -1, 1).astype(np.float32)[None]
    src = write_audio(tmp_path / "clipped.wav", clipped, 16000, "FLOAT")
    result = run(src, tmp_path / "out.wav", "--model", tiny_model_file, "-q")
    assert result.exit_code == 0, result.stderr
    out, _ = sf.read(str(tmp_path / "out.wav"), dtype="float32")
    assert np.isfinite(out).all() and np.abs(out).max() <= 1.0


def test_attenuation_limit_reaches_the_model(tmp_path):
    mute = make_model()
    with torch.no_grad():
        mute.head.weight.zero_()
        mute.head.bias.fill_(-30.0)  # a mask of ~0: removes everything it may
    model_file = tmp_path / "mute.safetensors"
    save_model(model_file, mute, FeatureConfig())
    noise = (0.1 * np.random.default_rng(0).standard_normal((1, 16000))).astype(np.float32)
    src = write_audio(tmp_path / "noise.wav", noise, 16000, "FLOAT")
    energies = {}
    for label, extra in (("limited", ["--atten-lim", "6"]), ("unlimited", [])):
        result = run(src, tmp_path / f"{label}.wav", "--model", model_file, "-q", *extra)
        assert result.exit_code == 0, result.stderr
        out, _ = sf.read(str(tmp_path / f"{label}.wav"), dtype="float64")
        energies[label] = 10 * np.log10(np.sum(out**2) / np.sum(noise.astype(np.float64) ** 2) + 1e-30)
    assert -6.5 <= energies["limited"] <= -5.5
    assert energies["unlimited"] < -40


def test_unavailable_device_is_one_clear_error(tmp_path, src, tiny_model_file):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = run(src, tmp_path / "out.wav", "--model", tiny_model_file, "--device", "cuda")
    assert_one_error_line(result, "device")
    assert not (tmp_path / "out.wav").exists()


@pytest.mark.parametrize("device", ["gpu", "tpu", "cuda:x", "CPU "])
def test_invalid_device_is_a_usage_error(tmp_path, src, tiny_model_file, device):
    result = run(src, tmp_path / "out.wav", "--model", tiny_model_file, "--device", device)
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert "--device" in result.stderr and "is not auto, cpu, cuda or cuda:N" in result.stderr
    assert not (tmp_path / "out.wav").exists()


def test_existing_output_is_replaced_with_overwrite(tmp_path, src, tiny_model_file):
    dst = tmp_path / "out.wav"
    dst.write_bytes(b"old output")
    result = run(src, dst, "--model", tiny_model_file, "--overwrite", "-q")
    assert result.exit_code == 0, result.stderr
    assert sf.info(str(dst)).frames == 8000


# -- bad input: exit 1, one line, nothing written --------------------------------------------


def _zero_length_wav(path: Path) -> Path:
    sf.write(str(path), np.zeros((0, 2), np.float32), 16000, subtype="PCM_16")
    return path


def _truncated_wav(path: Path) -> Path:
    write_audio(path, speech_like(16000, 1.0), 16000, "PCM_16")
    path.write_bytes(path.read_bytes()[:20000])
    return path


def _float_wav_with(value: float):
    def make(path: Path) -> Path:
        wav = speech_like(16000, 2.0, channels=2)
        wav[1, 20000] = value  # in the middle of the file, after the first blocks were fine
        return write_audio(path, wav, 16000, "FLOAT")

    return make


BAD_INPUTS = {
    "missing_file": (lambda p: p, "file not found"),
    # a folder as input is batch mode (denoise IN_DIR OUT_DIR); an empty one is still one clear error
    "empty_directory": (lambda p: (p.mkdir(), p)[1], ""),
    "empty_file": (lambda p: (p.write_bytes(b""), p)[1], "file is empty"),
    "zero_length_wav": (_zero_length_wav, "holds no samples"),
    "text_file_named_wav": (lambda p: (p.write_text("not audio\n" * 100), p)[1], "not a readable audio file"),
    "truncated_wav": (_truncated_wav, "file is truncated"),
    "nan_samples": (_float_wav_with(np.nan), "holds NaN or infinite samples"),
    "inf_samples": (_float_wav_with(np.inf), "holds NaN or infinite samples"),
    "sample_rate_too_high": (lambda p: write_audio(p, speech_like(8000, 0.1), 384000), "sample rate 384000 Hz"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_1_with_one_line_and_writes_nothing(tmp_path, tiny_model_file, case):
    make, match = BAD_INPUTS[case]
    bad = make(tmp_path / "in.wav")
    before = snapshot(tmp_path)
    result = run(bad, tmp_path / "out.wav", "--model", tiny_model_file)
    line = assert_one_error_line(result, match)
    assert "in.wav" in line
    assert snapshot(tmp_path) == before  # no output, no temp file, input untouched


def test_directory_where_the_output_file_is_expected(tmp_path, src, tiny_model_file):
    (tmp_path / "out.wav").mkdir()
    before = snapshot(tmp_path)
    assert_one_error_line(run(src, tmp_path / "out.wav", "--model", tiny_model_file), "is a folder, expected an output")
    assert snapshot(tmp_path) == before and list((tmp_path / "out.wav").iterdir()) == []


def test_directory_where_the_model_file_is_expected(tmp_path, src):
    assert_one_error_line(run(src, tmp_path / "out.wav", "--model", tmp_path), "not a file")
    assert not (tmp_path / "out.wav").exists()


def test_unknown_output_extension(tmp_path, src, tiny_model_file):
    before = snapshot(tmp_path)
    assert_one_error_line(run(src, tmp_path / "out.xyz", "--model", tiny_model_file), "unknown output extension")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("overwrite", [False, True])
def test_output_path_equal_to_input_path(tmp_path, src, tiny_model_file, overwrite):
    before = src.read_bytes()
    args = [src, src, "--model", tiny_model_file] + (["--overwrite"] if overwrite else [])
    assert_one_error_line(run(*args), "output path is the input file")
    assert src.read_bytes() == before
    # the same file under another name
    link = tmp_path / "link.wav"
    link.symlink_to(src)
    assert_one_error_line(run(src, link, "--model", tiny_model_file, "--overwrite"), "output path is the input file")
    assert src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav", "link.wav"]


def test_existing_output_is_kept_without_overwrite(tmp_path, src, tiny_model_file):
    dst = tmp_path / "out.wav"
    dst.write_bytes(b"precious")
    assert_one_error_line(run(src, dst, "--model", tiny_model_file), "already exists; pass --overwrite")
    assert dst.read_bytes() == b"precious"


def test_output_folder_not_writable(tmp_path, src, tiny_model_file):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root: chmod does not stop writing")
        assert_one_error_line(run(src, folder / "out.wav", "--model", tiny_model_file), "cannot write to")
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_output_folder_refusing_writes(tmp_path, src, tiny_model_file, monkeypatch):
    # the same failure as a read-only folder, even for root: creating the temp file is refused
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(outputs.tempfile, "mkstemp", denied)
    before = snapshot(tmp_path)
    assert_one_error_line(run(src, tmp_path / "out.wav", "--model", tiny_model_file), "Permission denied")
    assert snapshot(tmp_path) == before


def test_a_failed_run_removes_the_folders_it_made(tmp_path, tiny_model_file):
    # a FLAC cut in half passes the header check and fails while reading, after the output folders exist
    src = write_audio(tmp_path / "in.flac", speech_like(16000, 2.0, seed=3), 16000)
    src.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    (tmp_path / "out").mkdir()
    assert_one_error_line(run(src, tmp_path / "out" / "new" / "deeper" / "x.wav", "--model", tiny_model_file),
                          "in.flac")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.flac", "out"]  # the folder that was there stays
    assert list((tmp_path / "out").iterdir()) == []


def test_a_run_creates_missing_output_folders(tmp_path, src, tiny_model_file):
    dst = tmp_path / "new" / "deeper" / "x.wav"
    assert run(src, dst, "--model", tiny_model_file).exit_code == 0
    assert sf.info(str(dst)).frames == sf.info(str(src)).frames


def test_output_under_a_file_instead_of_a_folder(tmp_path, src, tiny_model_file):
    assert_one_error_line(run(src, src / "out.wav", "--model", tiny_model_file), "in.wav is not a folder")


def test_bad_model_file(tmp_path, src):
    bogus = tmp_path / "model.safetensors"
    bogus.write_bytes(b"\x00" * 100)
    assert_one_error_line(run(src, tmp_path / "out.wav", "--model", bogus), "not a valid audiodenoise model file")
    assert not (tmp_path / "out.wav").exists()


@pytest.mark.parametrize("args", [["-"], ["-", "a.wav", "b.wav"], ["a.wav", "-", "b.wav"]])
def test_stdio_outside_in_out_is_a_usage_error(tmp_path, args):
    result = run(*[a if a == "-" else tmp_path / a for a in args])
    assert result.exit_code == 2
    assert result.stderr.startswith("denoise: error: - (standard input or output) works only as IN or OUT")


def test_one_file_is_written_beside_itself(tmp_path, src, tiny_model_file):
    result = run(src, "--model", tiny_model_file)
    assert result.exit_code == 0, result.stderr
    out = tmp_path / "in_denoised.wav"
    assert result.stderr.startswith(f"wrote {out} ") and result.stdout == ""
    expected = tmp_path / "expected.wav"
    assert run(src, expected, "--model", tiny_model_file).exit_code == 0
    assert out.read_bytes() == expected.read_bytes()
    before = out.read_bytes()
    again = run(src, "--model", tiny_model_file)  # never overwrites
    assert_one_error_line(again, f"{out}: already exists")
    assert out.read_bytes() == before


def test_several_files_are_written_beside_themselves(tmp_path, tiny_model_file):
    (tmp_path / "sub").mkdir()
    files = [write_audio(tmp_path / name, speech_like(16000, 0.3, seed=i), 16000)
             for i, name in enumerate(["a.wav", "sub/b.flac", "c.wav"])]
    (tmp_path / "c_denoised.wav").write_bytes(b"kept")  # an existing output is skipped, not overwritten
    result = run(*files, "--model", tiny_model_file)
    assert result.exit_code == 0, result.stderr
    assert sf.info(str(tmp_path / "a_denoised.wav")).frames == 4800
    assert sf.info(str(tmp_path / "sub" / "b_denoised.flac")).format == "FLAC"
    assert (tmp_path / "c_denoised.wav").read_bytes() == b"kept"
    assert "2 of 3 files denoised, 0 failed, 1 skipped" in result.stderr


def test_an_input_named_like_an_output_is_never_overwritten(tmp_path, tiny_model_file):
    files = [write_audio(tmp_path / name, speech_like(16000, 0.3, seed=i), 16000)
             for i, name in enumerate(["a.wav", "a_denoised.wav", "b.wav"])]
    before = files[1].read_bytes()
    result = run(*files, "--model", tiny_model_file, "--overwrite")
    assert result.exit_code == 1
    assert "a_denoised.wav is also an input; it is never overwritten" in result.stderr
    assert files[1].read_bytes() == before
    assert (tmp_path / "a_denoised_denoised.wav").exists() and (tmp_path / "b_denoised.wav").exists()


def test_progress_bar_ends_exactly_at_the_total_at_44100_hz(tmp_path, tiny_model_file):
    # 6.0034 s: a total rounded to 0.01 s (6.00) fell short of the counted seconds
    long_src = write_audio(tmp_path / "long.wav", speech_like(44100, 6.0034), 44100)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run(long_src, tmp_path / "out.wav", "--model", tiny_model_file)
    assert result.exit_code == 0, result.stderr
    assert not [w for w in caught if "clamping" in str(w.message)]
    frames = [f for f in result.stderr.replace("\r", "\n").splitlines() if "long.wav:" in f]
    assert frames and "100%" in frames[-1] and "6.0/6.0 s" in frames[-1]
    assert "<-" not in result.stderr and "clamping" not in result.stderr


def test_unknown_option_is_a_usage_error(tmp_path, src):
    result = run(src, tmp_path / "out.wav", "--strenght", "3")
    assert result.exit_code == 2
    assert not (tmp_path / "out.wav").exists()


def test_negative_attenuation_limit_is_a_usage_error(tmp_path, src, tiny_model_file):
    result = run(src, tmp_path / "out.wav", "--model", tiny_model_file, "--atten-lim", "-3")
    assert result.exit_code == 2
    assert not (tmp_path / "out.wav").exists()


# -- failures in the middle of a file -----------------------------------------------------------


def _fail_on_second_chunk(monkeypatch, exc: BaseException) -> list[int]:
    """Make the model raise ``exc`` on the 2nd chunk; 0.5 s chunks so a short file has several."""
    monkeypatch.setitem(Denoiser.__init__.__kwdefaults__, "chunk_seconds", 0.5)
    original = Denoiser._denoise_segment
    calls = []

    def flaky(self, segment, sample_rate):
        calls.append(segment.shape[1])
        if len(calls) == 2:
            raise exc
        return original(self, segment, sample_rate)

    monkeypatch.setattr(Denoiser, "_denoise_segment", flaky)
    return calls


def test_no_partial_output_when_the_model_fails_mid_file(tmp_path, tiny_model_file, monkeypatch):
    src = write_audio(tmp_path / "in.wav", speech_like(16000, 3.0), 16000)
    calls = _fail_on_second_chunk(monkeypatch, RuntimeError("out of memory"))
    result = run(src, tmp_path / "out.wav", "--model", tiny_model_file)
    assert_one_error_line(result, "internal error (RuntimeError: out of memory)")
    assert len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]  # no output, no temp file


def test_failed_overwrite_keeps_the_previous_output(tmp_path, tiny_model_file, monkeypatch):
    src = write_audio(tmp_path / "in.wav", speech_like(16000, 3.0), 16000)
    dst = tmp_path / "out.wav"
    dst.write_bytes(b"previous run")
    _fail_on_second_chunk(monkeypatch, RuntimeError("boom"))
    assert_one_error_line(run(src, dst, "--model", tiny_model_file, "--overwrite"), "boom")
    assert dst.read_bytes() == b"previous run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav", "out.wav"]


def test_ctrl_c_mid_file_leaves_nothing_and_exits_130(tmp_path, tiny_model_file, monkeypatch):
    src = write_audio(tmp_path / "in.wav", speech_like(16000, 3.0), 16000)
    _fail_on_second_chunk(monkeypatch, KeyboardInterrupt())
    result = run(src, tmp_path / "out.wav", "--model", tiny_model_file)
    assert result.exit_code == 130
    assert result.stderr.strip() == "denoise: error: interrupted; no partial output was left"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


def test_verbose_shows_the_traceback(tmp_path, tiny_model_file):
    result = run(tmp_path / "missing.wav", tmp_path / "out.wav", "--model", tiny_model_file, "--verbose")
    assert result.exit_code == 1
    assert "Traceback" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("denoise: error: ")


# -- the installed console script --------------------------------------------------------------


def test_console_script_error_path(tmp_path, tiny_model_file):
    script = Path(sys.executable).with_name("denoise")
    if not script.exists():
        script = shutil.which("denoise")
    if script is None:
        pytest.skip("the denoise console script is not installed")
    result = subprocess.run(
        [str(script), str(tmp_path / "missing.wav"), str(tmp_path / "out.wav"), "--model", str(tiny_model_file)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr == f"denoise: error: {tmp_path / 'missing.wav'}: file not found\n"
    assert result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def _maps_torch(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc to see torch being imported")
@pytest.mark.parametrize("prog, sig", [("denoise", signal.SIGINT), ("denoise", signal.SIGTERM),
                                       ("audiodenoise", signal.SIGTERM)])
def test_a_signal_while_torch_imports_exits_130_without_a_traceback(tmp_path, tiny_model_file, prog, sig):
    script = Path(sys.executable).with_name(prog)
    if not script.exists():
        pytest.skip(f"the {prog} console script is not installed")
    # two minutes of input: on a loaded machine this process may lose the CPU between seeing torch mapped
    # and sending the signal; the denoiser must not be able to finish first (it would exit 0)
    long_src = write_audio(tmp_path / "long.wav", 0.05 * np.random.default_rng(0).standard_normal((1, 16000 * 120)),
                           16000, "PCM_16")
    args = ["info", str(tiny_model_file)] if prog == "audiodenoise" else [str(long_src), str(tmp_path / "out.wav")]
    # a runner started as a background job passes SIGINT on as ignored, which the command rightly keeps
    # ignoring: start it with the default disposition a foreground terminal gives
    proc = subprocess.Popen([str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        while not _maps_torch(proc.pid):  # torch's import has begun (it goes on for a while after this)
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.002)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (proc.returncode, stderr)
    assert stderr == f"{prog}: error: interrupted; no partial output was left\n"
    assert stdout == ""
    assert not (tmp_path / "out.wav").exists()
