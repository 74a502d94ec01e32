"""Build pretrained/example-noisy.flac, the clip `make demo` denoises.

A LibriSpeech train-clean-100 utterance (CC BY 4.0) mixed at 5 dB SNR with 0 A.D. rain ambience
(`0ad-data`, CC-BY-SA-3.0) from the corpus `build_corpus.py` makes. Run from the repository root:
    python data_prep/make_example.py
"""

from pathlib import Path

import numpy as np
import soundfile as sf

from audiodenoise.mixing import mix_at_snr, noise_excerpt
from audiodenoise.prepare import load_mono

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT.parent / "shared" / "data" / "speech" / "librispeech-train-clean-100" / "1069-133699-0000.flac"
NOISE = ROOT / "data_prep" / "corpus" / "noise" / "0ad-data" / "ambient" / "weather" / "rain_11.ogg"
OUT = ROOT / "pretrained" / "example-noisy.flac"


def main() -> None:
    rng = np.random.default_rng(0)
    speech = load_mono(SPEECH, 16000)[: 16000 * 8]
    noise, _ = noise_excerpt(load_mono(NOISE, 16000), speech.size, rng)
    noisy, _ = mix_at_snr(speech, noise, 5.0)
    noisy *= 0.5 / np.abs(noisy).max()
    sf.write(OUT, noisy, 16000, subtype="PCM_16")
    print(f"wrote {OUT} ({speech.size / 16000:.1f} s)")


if __name__ == "__main__":
    main()
