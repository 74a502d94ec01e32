"""Audio files in and out: formats, subtypes, rates, channels, exact lengths, atomic writes, bad files."""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import make_model, speech_like, write_audio

from audiodenoise import audio, outputs
from audiodenoise.api import Denoiser
from audiodenoise.audio import AtomicWriter, output_format, soft_limit
from audiodenoise.errors import AudioError, OutputError
from audiodenoise.features import FeatureConfig


@pytest.fixture(scope="module")
def passthrough() -> Denoiser:
    """A model whose mask is 1 everywhere: the output must equal the input, so any loss shows."""
    model = make_model()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.fill_(40.0)
    return Denoiser(model, FeatureConfig(), device="cpu")


@pytest.fixture(scope="module")
def denoiser() -> Denoiser:
    return Denoiser(make_model(), FeatureConfig(), device="cpu")


def _read(path: Path) -> np.ndarray:
    data, _ = sf.read(str(path), dtype="float64", always_2d=True)
    return data.T


# quantisation step of each subtype, for comparing what was written with what was meant
STEP = {"PCM_16": 2.0**-15, "PCM_24": 2.0**-23, "PCM_32": 2.0**-31, "FLOAT": 0.0, "DOUBLE": 0.0}


@pytest.mark.parametrize(
    ("src_name", "src_subtype", "dst_name", "dst_format", "dst_subtype"),
    [
        ("in.wav", "PCM_16", "out.wav", "WAV", "PCM_16"),
        ("in.wav", "PCM_24", "out.wav", "WAV", "PCM_24"),
        ("in.wav", "PCM_32", "out.wav", "WAV", "PCM_32"),
        ("in.wav", "FLOAT", "out.wav", "WAV", "FLOAT"),
        ("in.wav", "PCM_24", "out.flac", "FLAC", "PCM_24"),
        ("in.wav", "FLOAT", "out.flac", "FLAC", "PCM_24"),  # FLAC has no float: its deepest PCM
        ("in.wav", "PCM_32", "out.flac", "FLAC", "PCM_24"),
        ("in.flac", "PCM_24", "out.flac", "FLAC", "PCM_24"),
        ("in.flac", "PCM_16", "out.wav", "WAV", "PCM_16"),
        ("in.wav", "PCM_24", "out.aiff", "AIFF", "PCM_24"),
    ],
)
def test_lossless_formats_keep_subtype_and_content(tmp_path, passthrough, src_name, src_subtype, dst_name,
                                                   dst_format, dst_subtype):
    wav = speech_like(16000, 0.5, channels=2)
    src = write_audio(tmp_path / src_name, wav, 16000, src_subtype)
    dst = tmp_path / dst_name
    passthrough.denoise_file(src, dst)
    info = sf.info(str(dst))
    assert (info.format, info.subtype) == (dst_format, dst_subtype)
    assert (info.samplerate, info.channels, info.frames) == (16000, 2, wav.shape[1])
    # pass-through model: the output is the input, to the precision of the coarser subtype
    tolerance = max(STEP[src_subtype], STEP[dst_subtype]) + 1e-5
    assert np.abs(_read(dst) - _read(src)).max() <= tolerance


@pytest.mark.parametrize(
    ("src_name", "src_subtype", "dst_name", "dst_format", "dst_subtype"),
    [
        ("in.ogg", "VORBIS", "out.wav", "WAV", "PCM_16"),
        ("in.ogg", "VORBIS", "out.ogg", "OGG", "VORBIS"),
        ("in.mp3", "MPEG_LAYER_III", "out.wav", "WAV", "PCM_16"),  # a codec is not carried into WAV
        ("in.mp3", "MPEG_LAYER_III", "out.flac", "FLAC", "PCM_16"),
        ("in.wav", "PCM_16", "out.mp3", "MP3", "MPEG_LAYER_III"),
        ("in.wav", "PCM_24", "out.ogg", "OGG", "VORBIS"),
    ],
)
def test_compressed_formats(tmp_path, denoiser, src_name, src_subtype, dst_name, dst_format, dst_subtype):
    wav = speech_like(16000, 0.5, channels=2)
    src = write_audio(tmp_path / src_name, wav, 16000, src_subtype)
    src_info = sf.info(str(src))
    dst = tmp_path / dst_name
    denoiser.denoise_file(src, dst)
    info = sf.info(str(dst))
    assert (info.format, info.subtype) == (dst_format, dst_subtype)
    assert (info.samplerate, info.channels) == (16000, 2)
    if dst_format not in ("MP3", "OGG"):  # lossy encoders may pad the end; lossless outputs are exact
        assert info.frames == src_info.frames
    assert np.isfinite(_read(dst)).all()


def test_subtype_can_be_chosen(tmp_path, denoiser):
    src = write_audio(tmp_path / "in.wav", speech_like(16000, 0.2), 16000, "PCM_16")
    denoiser.denoise_file(src, tmp_path / "out.wav", subtype="FLOAT")
    assert sf.info(str(tmp_path / "out.wav")).subtype == "FLOAT"


@pytest.mark.parametrize(
    ("like_format", "like_subtype", "dst", "expected"),
    [
        ("WAV", "PCM_24", "x.wav", ("WAV", "PCM_24")),
        ("WAV", "PCM_24", "x.FLAC", ("FLAC", "PCM_24")),
        ("WAV", "PCM_32", "x.flac", ("FLAC", "PCM_24")),
        ("WAV", "FLOAT", "x.flac", ("FLAC", "PCM_24")),
        ("WAV", "DOUBLE", "x.flac", ("FLAC", "PCM_24")),
        ("WAV", "FLOAT", "x.ogg", ("OGG", "VORBIS")),
        ("FLAC", "PCM_16", "x.ogg", ("OGG", "VORBIS")),
        ("OGG", "VORBIS", "x.wav", ("WAV", "PCM_16")),
        ("OGG", "VORBIS", "x.ogg", ("OGG", "VORBIS")),
        ("MP3", "MPEG_LAYER_III", "x.wav", ("WAV", "PCM_16")),
        ("WAV", "PCM_16", "x.opus", ("OGG", "OPUS")),
        ("WAV", "ULAW", "x.wav", ("WAV", "ULAW")),
        ("WAV", "DOUBLE", "x.w64", ("W64", "DOUBLE")),
    ],
)
def test_output_format_follows_the_extension(like_format, like_subtype, dst, expected):
    like = audio.AudioInfo("in", 16000, 1, 100, like_format, like_subtype)
    assert output_format(dst, like=like) == expected


@pytest.mark.parametrize("dst", ["out.xyz", "out"])
def test_unknown_output_extension_is_refused(dst):
    with pytest.raises(AudioError, match="unknown output extension"):
        output_format(dst)


@pytest.mark.parametrize("sample_rate", [8000, 22050, 44100, 48000, 96000, 192000])
def test_sample_rate_and_exact_length_are_kept(tmp_path, passthrough, sample_rate):
    n = int(0.25 * sample_rate) + 7  # not a whole number of hops
    wav = speech_like(sample_rate, n / sample_rate, seed=sample_rate)
    wav[0, -50:] = 0.3  # content up to the very last sample
    src = write_audio(tmp_path / "in.wav", wav, sample_rate, "FLOAT")
    passthrough.denoise_file(src, tmp_path / "out.wav")
    info = sf.info(str(tmp_path / "out.wav"))
    assert (info.samplerate, info.frames, info.subtype) == (sample_rate, n, "FLOAT")
    # and the full band: a pass-through model returns every sample up to the file's Nyquist
    assert np.abs(_read(tmp_path / "out.wav") - wav).max() < 1e-5


@pytest.mark.parametrize("channels", [1, 2, 6])
def test_channel_count_and_order_are_kept(tmp_path, passthrough, channels):
    wav = speech_like(48000, 0.2, channels=channels) * np.linspace(0.3, 1.0, channels)[:, None].astype(np.float32)
    src = write_audio(tmp_path / "in.wav", wav, 48000, "PCM_24")
    passthrough.denoise_file(src, tmp_path / "out.flac")
    out = _read(tmp_path / "out.flac")
    assert out.shape == wav.shape
    assert np.abs(out - wav).max() < 1e-5


def test_file_in_chunks_equals_one_pass(tmp_path):
    # 48 kHz stereo, 3 s read and written in 0.5 s chunks
    model, features = make_model(), FeatureConfig()
    wav = speech_like(48000, 3.0, channels=2, seed=7)
    src = write_audio(tmp_path / "in.wav", wav, 48000, "FLOAT")
    Denoiser(model, features, device="cpu", chunk_seconds=0.5).denoise_file(src, tmp_path / "out.wav")
    one_pass = Denoiser(model, features, device="cpu", chunk_seconds=100.0).denoise(wav, 48000)
    assert np.abs(_read(tmp_path / "out.wav") - one_pass).max() < 1e-4


def test_output_file_has_normal_permissions(tmp_path, denoiser):
    src = write_audio(tmp_path / "in.wav", speech_like(16000, 0.2), 16000)
    umask = os.umask(0o022)
    try:
        denoiser.denoise_file(src, tmp_path / "out.wav", overwrite=True)
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "out.wav").stat().st_mode) == 0o644  # what any new file gets, not 0600


def test_output_folders_are_created(tmp_path, denoiser):
    src = write_audio(tmp_path / "in.wav", speech_like(16000, 0.2), 16000)
    denoiser.denoise_file(src, tmp_path / "a" / "b" / "out.flac")
    assert sf.info(str(tmp_path / "a" / "b" / "out.flac")).frames == 3200


# -- bad files ---------------------------------------------------------------------------


def _zero_length_wav(path: Path) -> Path:
    sf.write(str(path), np.zeros((0, 1), np.float32), 16000, subtype="PCM_16")
    assert path.stat().st_size > 0  # a valid header, no frames
    return path


def _truncated_wav(path: Path) -> Path:
    write_audio(path, speech_like(16000, 1.0), 16000, "PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


BAD_FILES = {
    "missing": (lambda p: p, "file not found"),
    "folder": (lambda p: (p.mkdir(), p)[1], "is a folder"),
    "empty": (lambda p: (p.write_bytes(b""), p)[1], "file is empty"),
    "zero_length_wav": (_zero_length_wav, "holds no samples"),
    "text_as_wav": (lambda p: (p.write_text("hello, I am not audio\n" * 20), p)[1], "not a readable audio file"),
    "truncated_wav": (_truncated_wav, "file is truncated \\(header says 32000 bytes of audio data, the file holds"),
    "rate_too_low": (lambda p: write_audio(p, speech_like(4000, 0.5), 4000), "sample rate 4000 Hz is outside"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_input_files_are_named_clearly(tmp_path, case):
    make, match = BAD_FILES[case]
    path = make(tmp_path / "in.wav")
    with pytest.raises(AudioError, match=f"in.wav: {match}"):
        audio.info(path)


def test_truncated_flac_fails_while_reading(tmp_path, denoiser):
    src = write_audio(tmp_path / "in.flac", speech_like(16000, 2.0, seed=3), 16000)
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match="in.flac: (file is truncated|read failed)"):
        denoiser.denoise_file(src, tmp_path / "out.wav")
    assert not (tmp_path / "out.wav").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.flac"]


@pytest.mark.parametrize("subtype", ["VORBIS", "OPUS"])
@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_truncated_ogg_is_refused(tmp_path, subtype, keep):
    # libsndfile reads a cut Ogg file as a shorter one, without an error
    src = write_audio(tmp_path / "in.ogg", speech_like(48000, 3.0, seed=3), 48000, subtype)
    whole = audio.info(src).frames
    assert whole >= 48000 * 3 - 1000
    src.write_bytes(src.read_bytes()[: int(src.stat().st_size * keep)])
    refused = "in.ogg: (file is truncated \\(the file ends inside an Ogg page|not a readable)"
    with pytest.raises(AudioError, match=refused):
        audio.info(src)


@pytest.mark.parametrize("declared", [0xFFFFFFFF, 0x7FFFFFFF])
def test_streamed_wav_with_unknown_length_is_not_called_truncated(tmp_path, declared):
    path = write_audio(tmp_path / "in.wav", speech_like(16000, 0.5), 16000, "PCM_16")
    data = bytearray(path.read_bytes())
    at = data.find(b"data")
    # what a writer to a pipe leaves in the header: neither size filled in (ffmpeg: both -1)
    data[at + 4 : at + 8] = struct.pack("<I", declared)
    data[4:8] = struct.pack("<I", declared)
    path.write_bytes(bytes(data))
    assert audio.info(path).frames == 8000


@pytest.mark.parametrize("declared", [0x7FFF0000, 0x7FFFFFF0, 0x7FFFFFFF, 0xFFFFFFFF])
def test_a_2_gb_data_size_beside_a_true_riff_size_is_refused(tmp_path, declared):
    # the RIFF size says the writer knew the file's length, so a data size of ~2 GB is false
    path = write_audio(tmp_path / "in.wav", speech_like(16000, 0.1), 16000, "PCM_16")
    data = bytearray(path.read_bytes())
    assert len(data) < 3300  # a 3 kB body
    at = data.find(b"data")
    data[at + 4 : at + 8] = struct.pack("<I", declared)
    path.write_bytes(bytes(data))
    with pytest.raises(AudioError, match=f"in.wav: file is truncated \\(header says {declared} bytes of audio"):
        audio.info(path)


def test_a_finite_1e300_sample_is_named_by_its_magnitude_not_as_infinite(tmp_path, denoiser):
    wav = speech_like(16000, 1.0).astype(np.float64)
    wav[0, 12345] = 1e300  # finite in a 64-bit float file, infinite once read as float32
    src = write_audio(tmp_path / "in.wav", wav, 16000, "DOUBLE")
    with pytest.raises(AudioError, match="in.wav: holds samples of magnitude 1e\\+300, far beyond full scale"):
        denoiser.denoise_file(src, tmp_path / "out.wav")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_refused_and_nothing_is_written(tmp_path, denoiser, bad):
    wav = speech_like(16000, 1.0)
    wav[0, 12345] = bad
    src = write_audio(tmp_path / "in.wav", wav, 16000, "FLOAT")
    with pytest.raises(AudioError, match="in.wav: holds NaN or infinite samples"):
        denoiser.denoise_file(src, tmp_path / "out.wav")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


# -- atomic writer, limiter, resampler -------------------------------------------------------


def test_atomic_writer_leaves_nothing_on_failure_and_keeps_the_old_file(tmp_path):
    dst = tmp_path / "out.wav"
    dst.write_bytes(b"previous output")
    with pytest.raises(RuntimeError, match="boom"):
        with AtomicWriter(dst, sample_rate=16000, channels=1, format="WAV", subtype="PCM_16") as writer:
            writer.write(np.zeros((1, 1000), np.float32))
            assert len(list(tmp_path.iterdir())) == 2  # the temp file beside the target
            raise RuntimeError("boom")
    assert dst.read_bytes() == b"previous output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]


def test_atomic_writer_replaces_on_success(tmp_path):
    dst = tmp_path / "out.wav"
    dst.write_bytes(b"previous output")
    with AtomicWriter(dst, sample_rate=8000, channels=2, format="WAV", subtype="PCM_16") as writer:
        writer.write(np.full((2, 100), 0.25, np.float32))
        writer.write(np.full((2, 50), -0.25, np.float32))
    out = _read(dst)
    assert out.shape == (2, 150) and out[0, 0] == 0.25 and out[1, -1] == -0.25
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]


def test_atomic_writer_needs_an_existing_folder(tmp_path):
    with pytest.raises(OutputError, match="output folder .* does not exist"):
        with AtomicWriter(tmp_path / "no" / "out.wav", sample_rate=8000, channels=1, format="WAV", subtype="PCM_16"):
            pass


def test_atomic_writer_reports_an_unwritable_folder(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(outputs.tempfile, "mkstemp", denied)
    with pytest.raises(OutputError, match="cannot write to .*Permission denied"):
        with AtomicWriter(tmp_path / "out.wav", sample_rate=8000, channels=1, format="WAV", subtype="PCM_16"):
            pass


def test_soft_limit():
    x = np.linspace(-3, 3, 20001, dtype=np.float32)
    y = soft_limit(x)
    assert np.abs(y).max() <= audio.LIMIT_CEILING
    below = np.abs(x) <= audio.LIMIT_KNEE
    assert np.array_equal(y[below], x[below])  # untouched below the knee
    assert np.all(np.diff(y) >= 0)  # monotonic: no fold-over distortion
    assert np.array_equal(y, -soft_limit(-x))
    quiet = np.full(10, 0.5, np.float32)
    assert soft_limit(quiet) is quiet  # nothing to do, no copy


@pytest.mark.parametrize(("from_rate", "to_rate"), [(44100, 16000), (8000, 16000), (192000, 16000)])
def test_resample_lengths(from_rate, to_rate):
    wav = speech_like(from_rate, 0.5, channels=2)
    out = audio.resample(wav, from_rate, to_rate)
    assert out.dtype == np.float32 and out.shape[0] == 2
    assert abs(out.shape[1] - wav.shape[1] * to_rate / from_rate) <= 1
    assert audio.resample(wav, 16000, 16000) is wav


def test_load_and_read_blocks(tmp_path):
    wav = speech_like(22050, 0.5, channels=2)
    path = write_audio(tmp_path / "in.wav", wav, 22050, "FLOAT")
    loaded, rate = audio.load(path)
    assert rate == 22050 and np.array_equal(loaded, wav)
    blocks = list(audio.read_blocks(path, 1000))
    assert [start for start, _ in blocks] == list(range(0, wav.shape[1], 1000))
    assert np.array_equal(np.concatenate([b for _, b in blocks], axis=1), wav)


def test_input_is_never_modified(tmp_path, denoiser):
    src = write_audio(tmp_path / "in.wav", speech_like(16000, 0.5), 16000)
    before = src.read_bytes()
    mtime = os.stat(src).st_mtime_ns
    denoiser.denoise_file(src, tmp_path / "out.wav")
    assert src.read_bytes() == before and os.stat(src).st_mtime_ns == mtime


# -- MP3 damage and the decoder's own messages ------------------------------------------------------


def _mp3(path: Path) -> Path:
    return write_audio(path, speech_like(16000, 3.0), 16000)


def _damage(path: Path, how: str) -> Path:
    data = bytearray(path.read_bytes())
    if how == "xor-start":  # every 7th byte of the first 2 kB
        for i in range(0, 2000, 7):
            data[i] ^= 0x55
    else:  # 20 single-bit flips in the body
        rng = np.random.default_rng(int(how.split("-")[1]))
        for _ in range(2):  # the second draw of the seeded sequence, as in the probe that found it
            picks = [(int(p), int(rng.integers(0, 8))) for p in rng.integers(500, len(data), 20)]
        for pos, bit in picks:
            data[pos] ^= 1 << bit
    path.write_bytes(bytes(data))
    return path


def test_a_whole_mp3_is_read_without_decoder_messages(tmp_path, denoiser, capfd):
    src = _mp3(tmp_path / "in.mp3")
    denoiser.denoise_file(src, tmp_path / "out.wav")
    assert sf.info(str(tmp_path / "out.wav")).frames == audio.info(src).frames
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("how", ["xor-start", "flips-1"])
def test_a_damaged_mp3_is_refused_and_the_decoder_stays_quiet(tmp_path, denoiser, capfd, how):
    src = _damage(_mp3(tmp_path / "in.mp3"), how)
    with pytest.raises(AudioError, match="in.mp3: damaged MPEG audio") as info:
        denoiser.denoise_file(src, tmp_path / "out.wav")
    assert "\n" not in str(info.value)
    assert capfd.readouterr().err == ""  # libmpg123's "error: dequantization failed!" lines are caught
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp3"]


def test_an_mp3_with_a_broken_first_header_gets_the_decoders_reason(tmp_path, capfd):
    src = _mp3(tmp_path / "in.mp3")
    data = bytearray(src.read_bytes())
    data[:4] = b"\xff\xff\xff\xff"
    src.write_bytes(bytes(data))
    with pytest.raises(AudioError, match="in.mp3: (damaged MPEG audio|not a readable audio file \\(MPEG decoder)"):
        audio.load(src)
    assert capfd.readouterr().err == ""


# -- file names that are not UTF-8 --------------------------------------------------------------------


def test_file_names_that_are_not_utf8_are_read_and_written(tmp_path, denoiser):
    folder = os.fsdecode(bytes(tmp_path) + b"/d\xe9j\xe0")  # Latin-1 bytes: legal, not UTF-8
    os.mkdir(folder)
    src = os.path.join(folder, os.fsdecode(b"caf\xe9.wav"))
    write_audio(Path(os.fsdecode(bytes(tmp_path) + b"/plain.wav")), speech_like(16000, 0.5), 16000)
    os.rename(tmp_path / "plain.wav", src)
    dst = os.path.join(folder, os.fsdecode(b"out-\xff.flac"))
    result = denoiser.denoise_file(src, dst)
    assert result.frames == 8000
    assert sorted(os.listdir(os.fsencode(folder))) == [b"caf\xe9.wav", b"out-\xff.flac"]
    assert audio.info(dst).frames == 8000
