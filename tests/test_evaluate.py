"""Scoring protocol: SI-SDR, alignment, PESQ/STOI, the evaluate report and the CLI."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_model, speech_like, write_audio
from typer.testing import CliRunner

from audiodenoise.api import Denoiser
from audiodenoise.cli.main import app
from audiodenoise.errors import AudioDenoiseError, AudioError, DatasetError
from audiodenoise.evaluate import (
    align,
    evaluate,
    format_table,
    read_pairs_csv,
    score_pair,
    si_sdr,
    snr_group,
)
from audiodenoise.features import FeatureConfig

SR = 16000
SNRS = (-5, 0, 5, 15)


def _mix(clean: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(clean.shape[-1])
    noise *= np.sqrt(np.mean(clean**2) / np.mean(noise**2)) * 10 ** (-snr_db / 20)
    return (clean + noise).astype(np.float32)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """``root/{noisy,clean}/ID.flac`` and ``root/pairs.csv``: 4 pairs of 2.5 s at 16 kHz."""
    root = tmp_path_factory.mktemp("evalset")
    (root / "noisy").mkdir()
    (root / "clean").mkdir()
    with open(root / "pairs.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "snr_db", "seconds"])
        for i, snr_db in enumerate(SNRS):
            pair_id = f"p{i}_{snr_db:+d}dB"
            clean = speech_like(SR, 2.5, seed=i)
            noisy = _mix(clean, snr_db, seed=100 + i)
            noisy *= min(1.0, 0.95 / np.abs(noisy).max())
            clean *= min(1.0, 0.95 / np.abs(noisy).max())
            write_audio(root / "clean" / f"{pair_id}.flac", clean, SR)
            write_audio(root / "noisy" / f"{pair_id}.flac", noisy, SR)
            writer.writerow([pair_id, snr_db, 2.5])
    return root


# -- metrics ---------------------------------------------------------------------


def test_si_sdr_of_itself_is_very_high():
    ref = speech_like(SR, 2.0)[0].astype(np.float64)
    assert si_sdr(ref, ref) > 100


def test_si_sdr_is_scale_invariant():
    ref = speech_like(SR, 2.0)[0].astype(np.float64)
    est = _mix(ref, 5.0, seed=1).astype(np.float64)
    assert si_sdr(ref, 0.1 * est) == pytest.approx(si_sdr(ref, est), abs=1e-9)
    assert si_sdr(ref, 7.0 * est) == pytest.approx(si_sdr(ref, est), abs=1e-9)


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 10.0, 20.0])
def test_si_sdr_of_signal_plus_noise_is_the_snr(snr_db):
    ref = speech_like(SR, 2.0)[0].astype(np.float64)
    ref -= ref.mean()
    noise = np.random.default_rng(3).standard_normal(ref.size)
    noise -= noise.mean()
    noise -= np.dot(noise, ref) / np.dot(ref, ref) * ref  # orthogonal to the reference
    noise *= np.sqrt(np.sum(ref**2) / np.sum(noise**2)) * 10 ** (-snr_db / 20)
    assert si_sdr(ref, ref + noise) == pytest.approx(snr_db, abs=0.1)


@pytest.mark.parametrize("delay_ms", [37, -37, 0])
def test_align_recovers_a_known_delay(delay_ms):
    ref = speech_like(SR, 2.0)[0].astype(np.float64)
    lag = delay_ms * SR // 1000
    out = np.concatenate([np.zeros(lag), ref]) if lag >= 0 else ref[-lag:]
    aligned, found = align(ref, out, SR)
    assert found == lag
    assert aligned.shape == ref.shape
    if lag >= 0:  # late: the tail is zero-padded
        np.testing.assert_array_equal(aligned[: ref.size - lag], ref[: ref.size - lag])
    else:  # early: the head is zero-padded
        np.testing.assert_array_equal(aligned[-lag:], ref[-lag:])


def test_align_clamps_the_lag_to_100_ms():
    ref = speech_like(SR, 2.0)[0].astype(np.float64)
    out = np.concatenate([np.zeros(int(0.3 * SR)), ref])  # 300 ms late: out of reach
    aligned, found = align(ref, out, SR)
    assert abs(found) <= 0.1 * SR
    assert aligned.shape == ref.shape


def test_align_pads_and_cuts_to_the_reference_length():
    ref = speech_like(SR, 2.0)[0].astype(np.float64)
    assert align(ref, ref[:1000], SR)[0].shape == ref.shape
    assert align(ref, np.concatenate([ref, ref]), SR)[0].shape == ref.shape


def test_score_pair_of_a_signal_with_itself():
    ref = speech_like(SR, 3.0)[0]
    scores = score_pair(ref, ref)
    assert scores["pesq_wb"] == pytest.approx(4.64, abs=0.01)
    assert scores["stoi"] == pytest.approx(1.0, abs=1e-3)
    assert scores["si_sdr"] > 60


def test_score_pair_reads_files_downmixes_and_resamples(tmp_path):
    ref = speech_like(SR, 3.0)
    ref_path = write_audio(tmp_path / "ref.flac", ref, SR)
    # the same speech at 48 kHz on two channels, as a float WAV
    import soxr

    up = soxr.resample(ref[0].astype(np.float64), SR, 48000).astype(np.float32)
    out_path = write_audio(tmp_path / "out.wav", np.stack([up, up]), 48000, subtype="FLOAT")
    scores = score_pair(ref_path, out_path)
    assert scores["pesq_wb"] > 4.5
    assert scores["stoi"] > 0.99


def test_score_pair_rejects_non_finite_output():
    ref = speech_like(SR, 2.0)[0]
    out = ref.copy()
    out[100] = np.nan
    with pytest.raises(AudioError, match="NaN or infinite"):
        score_pair(ref, out)


def test_missing_eval_extra_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pesq", None)
    ref = speech_like(SR, 1.0)[0]
    with pytest.raises(AudioDenoiseError, match=r"eval.*extra|audiodenoise\[eval\]"):
        score_pair(ref, ref)


def test_snr_groups_follow_the_protocol():
    assert [snr_group(s) for s in (-5, 0, 5, 10, 15)] == ["low", "low", "mid", "high", "high"]
    assert snr_group(None) is None


def test_pairs_csv_with_a_bad_snr_is_an_error(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("id,snr_db\na,5\nb,loud\n")
    with pytest.raises(DatasetError, match="line 3.*loud"):
        read_pairs_csv(path)


@pytest.mark.parametrize("content", [bytes(range(256)) * 4, "id,snr_db\na,5\n".encode("utf-16")],
                         ids=["binary", "utf-16"])
def test_a_binary_pairs_file_is_a_clear_error(tmp_path, content):
    path = tmp_path / "pairs.csv"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match="pairs.csv: not a CSV pairs file"):
        read_pairs_csv(path)


# -- evaluate ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def noisy_report(dataset) -> dict:
    """The noisy input scored as if it were the output (serial)."""
    return evaluate(dataset / "noisy", dataset / "clean", denoised_dir=dataset / "noisy",
                    pairs_csv=dataset / "pairs.csv", progress=False)


def test_noisy_as_denoised_scores_like_the_noisy_input(noisy_report):
    report = noisy_report
    assert report["n_pairs"] == len(SNRS) and report["n_failures"] == 0
    for row in report["files"]:
        assert row["processed"] == row["noisy"]
        assert row["lag_samples"] == 0
    assert report["means"]["processed"] == report["means"]["noisy"]
    groups = report["groups"]
    assert groups["low"]["snr_db"] == [-5.0, 0.0] and groups["mid"]["snr_db"] == [5.0]
    assert groups["high"]["snr_db"] == [15.0]
    assert groups["low"]["noisy"]["si_sdr"] < groups["mid"]["noisy"]["si_sdr"] < groups["high"]["noisy"]["si_sdr"]
    assert report["rtf"] is None
    table = format_table(report)
    assert "| noisy input (no processing) |" in table and table.count("\n") == 3


def test_denoised_output_with_a_delay_scores_as_without(dataset, tmp_path):
    """A pure delay of the output (a tool's latency) is not penalised."""
    out_dir = tmp_path / "delayed"
    out_dir.mkdir()
    for path in sorted((dataset / "noisy").iterdir()):
        import soundfile as sf

        wav, _ = sf.read(str(path), dtype="float32")
        write_audio(out_dir / path.name, np.concatenate([np.zeros(480, np.float32), wav])[None], SR)
    report = evaluate(dataset / "noisy", dataset / "clean", denoised_dir=out_dir, progress=False)
    for row in report["files"]:
        assert row["lag_samples"] == 480
        assert row["processed"]["si_sdr"] == pytest.approx(row["noisy"]["si_sdr"], abs=0.2)
    assert report["groups"] == {}  # no pairs.csv, no groups


def test_a_missing_output_is_a_reported_failure(dataset, tmp_path):
    out_dir = tmp_path / "partial"
    out_dir.mkdir()
    names = sorted(p.name for p in (dataset / "noisy").iterdir())
    for name in names[1:]:
        (out_dir / name).write_bytes((dataset / "noisy" / name).read_bytes())
    report = evaluate(dataset / "noisy", dataset / "clean", denoised_dir=out_dir,
                      pairs_csv=dataset / "pairs.csv", progress=False)
    missing = Path(names[0]).stem
    assert report["n_failures"] == 1
    assert report["failures"][0]["id"] == missing and "not found" in report["failures"][0]["reason"]
    row = next(r for r in report["files"] if r["id"] == missing)
    assert row["processed"] is None and row["noisy"] is not None
    assert report["means"]["processed"]["n"] == len(SNRS) - 1
    assert report["means"]["noisy"]["n"] == len(SNRS)


def test_evaluate_runs_a_denoiser_and_times_it(dataset):
    denoiser = Denoiser(make_model(), FeatureConfig(), device="cpu")
    report = evaluate(dataset / "noisy", dataset / "clean", denoiser=denoiser,
                      pairs_csv=dataset / "pairs.csv", progress=False, name="tiny")
    assert report["n_failures"] == 0 and report["system"] == "tiny"
    assert all(row["processed"] is not None for row in report["files"])
    assert report["rtf"] > 0 and report["timing"]["audio_seconds"] == pytest.approx(2.5 * len(SNRS))
    assert "| tiny |" in format_table(report)


def test_parallel_scoring_matches_serial(dataset, noisy_report):
    parallel = evaluate(dataset / "noisy", dataset / "clean", denoised_dir=dataset / "noisy",
                        pairs_csv=dataset / "pairs.csv", jobs=2, progress=False)
    assert parallel["files"] == noisy_report["files"]


def test_folders_without_common_names_are_an_error(dataset, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    write_audio(other / "unrelated.flac", speech_like(SR, 1.0), SR)
    with pytest.raises(DatasetError, match="no file names in common"):
        evaluate(dataset / "noisy", other, denoised_dir=dataset / "noisy", progress=False)


# -- CLI -----------------------------------------------------------------------------


def _cli(*args: str):
    return CliRunner().invoke(app, ["evaluate", *map(str, args)])


def test_cli_writes_the_report_and_exits_0(dataset, tmp_path):
    out = tmp_path / "reports" / "report.json"
    result = _cli("--noisy", dataset / "noisy", "--clean", dataset / "clean", "--denoised", dataset / "noisy",
                  "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["pairs_csv"] == str(dataset / "pairs.csv")  # found beside the folders
    assert report["n_pairs"] == len(SNRS) and set(report["groups"]) == {"low", "mid", "high"}
    assert "| noisy input (no processing) |" in result.stdout
    assert not list(out.parent.glob(".*"))  # no temp file left


def test_cli_runs_a_model_file(dataset, tiny_model_file, tmp_path):
    out = tmp_path / "report.json"
    result = _cli("--noisy", dataset / "noisy", "--clean", dataset / "clean", "--model", tiny_model_file,
                  "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["rtf"] > 0
    assert "tiny.safetensors" in result.stdout


def test_cli_exits_1_when_an_output_is_missing(dataset, tmp_path):
    out_dir = tmp_path / "partial"
    out_dir.mkdir()
    for path in sorted((dataset / "noisy").iterdir())[1:]:
        (out_dir / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "report.json"
    result = _cli("--noisy", dataset / "noisy", "--clean", dataset / "clean", "--denoised", out_dir,
                  "--out", out, "--quiet")
    assert result.exit_code == 1
    assert "1 of 4 pairs failed" in result.output
    assert json.loads(out.read_text())["n_failures"] == 1


def test_cli_mismatched_folders_are_one_line_and_exit_1(dataset, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    write_audio(other / "unrelated.flac", speech_like(SR, 1.0), SR)
    out = tmp_path / "report.json"
    result = _cli("--noisy", dataset / "noisy", "--clean", other, "--denoised", dataset / "noisy", "--out", out)
    assert result.exit_code == 1
    assert "no file names in common" in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert not out.exists()


def test_cli_puts_a_model_and_other_tools_folders_on_one_table(dataset, tiny_model_file, tmp_path):
    out = tmp_path / "report.json"
    result = _cli("--noisy", dataset / "noisy", "--clean", dataset / "clean", "--model", tiny_model_file,
                  "--denoised", f"tool A={dataset / 'noisy'}", "--denoised", f"tool B={dataset / 'noisy'}",
                  "--out", out, "-q")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| noisy input (no processing)", "| audiodenoise (tiny.safetensors)", "| tool A", "| tool B"]
    report = json.loads(out.read_text())
    assert [s["name"] for s in report["systems"]] == ["audiodenoise (tiny.safetensors)", "tool A", "tool B"]
    assert report["system"] == "audiodenoise (tiny.safetensors)"  # the first system is also the top level
    for row in report["files"]:
        assert row["systems"]["tool A"]["processed"] == row["noisy"]


def test_cli_two_folders_of_one_name_are_an_error(dataset):
    result = _cli("--noisy", dataset / "noisy", "--clean", dataset / "clean", "--denoised", f"x={dataset / 'noisy'}",
                  "--denoised", f"x={dataset / 'noisy'}")
    assert result.exit_code == 1 and "share a name" in result.output
    result = _cli("--noisy", dataset / "noisy", "--clean", dataset / "clean", "--denoised", dataset / "noisy",
                  "--denoised", dataset / "noisy", "--name", "mine")
    assert result.exit_code == 2 and "NAME=DIR" in result.output
