"""chunking: plans cover every sample once, identity is exact, chunked == one pass."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_model, speech_like

from audiodenoise.api import Denoiser
from audiodenoise.chunking import plan_chunks, process_array, process_chunked, process_stream
from audiodenoise.features import FeatureConfig

PLANS = [
    # total, chunk, context, align
    (0, 10, 3, 1),
    (1, 10, 3, 1),
    (10, 10, 3, 1),
    (11, 10, 3, 1),
    (1000, 7, 0, 1),
    (1000, 100, 250, 1),
    (12345, 1000, 300, 128),
    (12345, 999, 1, 384),
    (5000, 20000, 100, 64),
]


@pytest.mark.parametrize(("total", "chunk", "context", "align"), PLANS)
def test_plan_covers_every_sample_exactly_once(total, chunk, context, align):
    steps = list(plan_chunks(total, chunk=chunk, context=context, align=align))
    covered = np.zeros(total, dtype=int)
    for step in steps:
        covered[step.keep_start : step.keep_stop] += 1
        assert 0 <= step.read_start <= step.keep_start < step.keep_stop <= step.read_stop <= total
        # reads start on the alignment grid, so every chunk sees the single-pass analysis grid
        assert step.read_start % align == 0 and step.keep_start % align == 0
        # as much context as asked for, where the signal has it
        assert step.keep_start - step.read_start >= min(context, step.keep_start)
        assert step.read_stop - step.keep_stop >= min(context, total - step.keep_stop)
    assert (covered == 1).all()
    assert [s.keep_start for s in steps] == sorted(s.keep_start for s in steps)
    if total:
        assert steps[0].keep_start == 0 and steps[-1].keep_stop == total


@pytest.mark.parametrize("kwargs", [{"chunk": 0, "context": 1}, {"chunk": 5, "context": -1}, {"chunk": 5, "align": 0}])
def test_bad_plan_is_refused(kwargs):
    with pytest.raises(ValueError, match="bad chunk plan"):
        list(plan_chunks(100, **{"context": 0, **kwargs}))


@pytest.mark.parametrize(("chunk", "context", "align"), [(1, 0, 1), (100, 0, 1), (333, 50, 1), (256, 300, 128)])
def test_identity_through_the_chunker_returns_the_input_exactly(chunk, context, align):
    wav = np.random.default_rng(0).standard_normal((3, 5003)).astype(np.float32)
    calls = []

    def identity(segment: np.ndarray) -> np.ndarray:
        calls.append(segment.shape[1])
        return segment.copy()

    out = process_array(wav, identity, chunk=chunk, context=context, align=align)
    assert out.dtype == wav.dtype and out.shape == wav.shape
    assert np.array_equal(out, wav)
    assert len(calls) == -(-5003 // (align * -(-chunk // align)))  # one call per chunk
    assert max(calls) <= align * -(-chunk // align) + 2 * align * -(-context // align)


def test_chunker_keeps_the_cores_of_a_position_dependent_function():
    # each output sample = the input sample + its offset inside the segment: only exact
    # bookkeeping of keep offsets puts the right samples in the right places
    wav = np.zeros((1, 1000), dtype=np.float32)
    out = process_array(wav, lambda seg: seg + np.arange(seg.shape[1], dtype=np.float32), chunk=100, context=30)
    expected = np.concatenate([np.arange(0, 100)] + [np.arange(30, 130)] * 9)
    assert np.array_equal(out[0], expected)


def test_process_chunked_streams_in_order_and_reports_progress():
    wav = np.arange(1000, dtype=np.float32)[None]
    written, progress, reads = [], [], []

    def read(a: int, b: int) -> np.ndarray:
        reads.append((a, b))
        return wav[:, a:b]

    process_chunked(read, lambda s: s * 2, written.append, 1000, chunk=300, context=20, on_progress=progress.append)
    assert progress == [300, 300, 300, 100]
    assert reads == [(0, 320), (280, 620), (580, 920), (880, 1000)]
    assert np.array_equal(np.concatenate(written, axis=1), wav * 2)


def test_a_function_that_changes_the_shape_is_an_error():
    with pytest.raises(ValueError, match="changed the shape"):
        process_array(np.zeros((1, 100), np.float32), lambda s: s[:, :-1], chunk=10, context=0)


def test_empty_signal_comes_back_empty():
    out = process_array(np.zeros((2, 0), np.float32), lambda s: s, chunk=10, context=2)
    assert out.shape == (2, 0)


@pytest.mark.parametrize("sample_rate", [16000, 48000, 8000, 44100])
def test_denoiser_chunked_equals_one_pass(sample_rate):
    # 3 s in 0.5 s chunks: six chunks, each with context on both sides
    wav = speech_like(sample_rate, 3.0, channels=2, seed=sample_rate)
    wav += 0.02 * np.random.default_rng(1).standard_normal(wav.shape).astype(np.float32)
    model, features = make_model(), FeatureConfig()
    one_pass = Denoiser(model, features, device="cpu", chunk_seconds=100.0)
    chunked = Denoiser(model, features, device="cpu", chunk_seconds=0.5)
    plan = chunked.chunk_plan(sample_rate)
    assert len(list(plan_chunks(wav.shape[1], **plan))) >= 5
    assert len(list(plan_chunks(wav.shape[1], **one_pass.chunk_plan(sample_rate)))) == 1
    a = one_pass.denoise(wav, sample_rate)
    b = chunked.denoise(wav, sample_rate)
    assert a.shape == b.shape == wav.shape
    assert np.abs(a - wav).max() > 1e-2  # the model really changed the signal
    assert np.abs(a - b).max() < 1e-4


@pytest.mark.parametrize("sample_rate", [11025, 22050, 44100, 88200, 176400])
def test_chunk_alignment_stays_short_at_44_1_khz_rates(sample_rate):
    # the native hop divides the span after which model and native frames line up, so reads
    # align every 40 ms; with the plain 353-sample hop at 44.1 kHz they aligned every 14 s,
    # which rounded each chunk's context up to 14 s (twice the work, 2.6 times the memory)
    plan = Denoiser(make_model(), FeatureConfig(), device="cpu").chunk_plan(sample_rate)
    assert plan["align"] <= 0.05 * sample_rate
    assert plan["context"] <= 2 * sample_rate


def _blocks(wav: np.ndarray, sizes, log: list | None = None):
    """``wav`` in blocks of the given sizes (cycled); ``log`` gets the samples read so far at each block."""
    start, i = 0, 0
    while start < wav.shape[1]:
        n = sizes[i % len(sizes)]
        if log is not None:
            log.append(start + min(n, wav.shape[1] - start))
        yield wav[:, start : start + n]
        start, i = start + n, i + 1


@pytest.mark.parametrize("total", [0, 1, 99, 100, 101, 1234])
@pytest.mark.parametrize(("chunk", "context", "align"), [(100, 0, 1), (100, 30, 1), (64, 100, 8), (7, 3, 5)])
@pytest.mark.parametrize("sizes", [[1], [13, 250], [5000]])
def test_stream_equals_chunked_processing_of_the_whole_signal(total, chunk, context, align, sizes):
    wav = np.random.default_rng(total).standard_normal((2, total))
    segments_whole, segments_stream = [], []

    def fn_for(log):
        def fn(segment):
            log.append(segment.copy())
            return np.cumsum(segment, axis=1)  # depends on everything in the segment: any shift shows
        return fn

    whole = process_array(wav, fn_for(segments_whole), chunk=chunk, context=context, align=align)
    pieces = []
    n = process_stream(_blocks(wav, sizes), fn_for(segments_stream), pieces.append, chunk=chunk, context=context,
                       align=align)
    assert n == total
    streamed = np.concatenate(pieces, axis=1) if pieces else wav[:, :0]
    assert np.array_equal(streamed, whole)
    assert len(segments_stream) == len(segments_whole)
    assert all(np.array_equal(a, b) for a, b in zip(segments_stream, segments_whole, strict=True))


def test_a_long_stream_is_read_in_blocks_and_held_in_bounded_memory():
    # a 10-minute 48 kHz stream in 4096-sample blocks: the reader never runs more than one chunk plus
    # both contexts plus one block ahead of what has been written
    chunk, context, block, rate = 48000, 12000, 4096, 48000
    total = 600 * rate
    reads: list[int] = []
    written = [0]
    ahead = []

    def stream():
        for start in range(0, total, block):
            n = min(block, total - start)
            reads.append(start + n)
            ahead.append(start + n - written[0])
            yield np.full((1, n), 0.25, np.float32)

    def write(core):
        written[0] += core.shape[1]

    held = []
    n = process_stream(stream(), lambda s: held.append(s.shape[1]) or s, write, chunk=chunk, context=context)
    assert n == total == written[0]
    assert len(reads) == -(-total // block)  # every block read once, none re-read
    assert max(ahead) <= chunk + 2 * context + block
    assert max(held) <= chunk + 2 * context


@pytest.mark.parametrize("two_d", [dict(layout="crn", channels=(4, 8), kernel_freq=3, bottleneck_channels=24),
                                   dict(channels=(32, 16), front_channels=4)], ids=["crn", "front_end"])
def test_denoiser_chunked_equals_one_pass_with_2d_convolutions(two_d):
    from audiodenoise.model import ModelConfig

    config = ModelConfig(bottleneck_dilations=(1, 2, 4), **two_d)
    wav = speech_like(16000, 3.0, seed=3)
    wav += 0.02 * np.random.default_rng(2).standard_normal(wav.shape).astype(np.float32)
    model, features = make_model(config), FeatureConfig()
    a = Denoiser(model, features, device="cpu", chunk_seconds=100.0).denoise(wav, 16000)
    b = Denoiser(model, features, device="cpu", chunk_seconds=0.5).denoise(wav, 16000)
    assert np.abs(a - wav).max() > 1e-2
    assert np.abs(a - b).max() < 1e-4


def test_denoiser_chunked_equals_one_pass_with_the_default_architecture():
    # the default (shipped) network's ±193-frame receptive field is 1.5 s: 8 s in 0.5 s chunks is many chunks,
    # each needing its full context from both neighbours
    from audiodenoise.model import ModelConfig

    config = ModelConfig()
    wav = speech_like(16000, 8.0, seed=4)
    wav += 0.02 * np.random.default_rng(3).standard_normal(wav.shape).astype(np.float32)
    model, features = make_model(config), FeatureConfig()
    chunked = Denoiser(model, features, device="cpu", chunk_seconds=0.5)
    plan = chunked.chunk_plan(16000)
    assert plan["context"] >= config.receptive_frames * features.hop_length
    assert len(list(plan_chunks(wav.shape[1], **plan))) >= 12
    a = Denoiser(model, features, device="cpu", chunk_seconds=100.0).denoise(wav, 16000)
    b = chunked.denoise(wav, 16000)
    assert np.abs(a - wav).max() > 1e-2
    assert np.abs(a - b).max() < 1e-4
