"""checkpoint: save -> load is exact; every kind of bad model file is refused by name, never unpickled."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from pathlib import Path

import pytest
import torch
from conftest import TINY_MODEL, make_model
from safetensors.torch import save as st_save

from audiodenoise import __version__
from audiodenoise.checkpoint import FORMAT, FORMAT_VERSION, load_model, save_model, sha256_file
from audiodenoise.errors import ModelError
from audiodenoise.features import FeatureConfig


def _metadata(**overrides) -> dict[str, str]:
    config = {"model": TINY_MODEL.to_dict(), "features": FeatureConfig().to_dict(), "info": {}}
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "package_version": __version__,
        "config": json.dumps(config),
    }
    metadata.update(overrides)
    return metadata


def _tensors() -> dict[str, torch.Tensor]:
    return {k: v.clone().contiguous() for k, v in make_model().state_dict().items()}


def _write(path: Path, tensors: dict[str, torch.Tensor] | None = None, **metadata) -> Path:
    path.write_bytes(st_save(_tensors() if tensors is None else tensors, metadata=_metadata(**metadata)))
    return path


def test_save_load_gives_identical_outputs(tmp_path):
    model = make_model(seed=3)
    features = FeatureConfig(log_eps=1e-6)
    path = tmp_path / "model.safetensors"
    save_model(path, model, features, info={"hours": 1.5, "seed": 3})
    loaded = load_model(path)
    assert loaded.features == features
    assert loaded.model.config == model.config
    assert loaded.info == {"hours": 1.5, "seed": 3}
    assert not loaded.model.training
    x = torch.randn(2, 257, 40) * 2 - 4
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key


@pytest.mark.parametrize("layout", ["freq_conv2d", "crn", "front"])
def test_save_load_round_trip_for_the_2d_layouts(tmp_path, layout):
    two_d = dict(layout=layout, bottleneck_channels=32) if layout != "front" else dict(front_channels=4)
    config = dataclasses.replace(TINY_MODEL, channels=(8, 16), output="log_mag", **two_d)
    model = make_model(config)
    path = tmp_path / "model2d.safetensors"
    save_model(path, model, FeatureConfig())
    x = torch.randn(1, 257, 20)
    loaded = load_model(path).model
    assert loaded.config == config
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_save_is_atomic_and_leaves_a_normal_file(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"old")
    save_model(path, make_model(), FeatureConfig())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]  # no temp file left
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


def test_checksum_is_verified(tmp_path):
    path = _write(tmp_path / "m.safetensors")
    digest = sha256_file(path)
    assert load_model(path, sha256=digest).features == FeatureConfig()
    with pytest.raises(ModelError, match="checksum mismatch"):
        load_model(path, sha256="0" * 64)
    corrupted = bytearray(path.read_bytes())
    corrupted[-1] ^= 0xFF  # one bit pattern in the last weight
    path.write_bytes(bytes(corrupted))
    with pytest.raises(ModelError, match="checksum mismatch"):
        load_model(path, sha256=digest)


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="nope.safetensors: model file not found"):
        load_model(tmp_path / "nope.safetensors")


def test_directory(tmp_path):
    with pytest.raises(ModelError, match="not a file"):
        load_model(tmp_path)


def test_truncated_file(tmp_path):
    path = _write(tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="not a valid audiodenoise model file"):
        load_model(path)


@pytest.mark.parametrize("size", [0, 5, 4096])
def test_random_bytes(tmp_path, size):
    path = tmp_path / "m.safetensors"
    path.write_bytes(os.urandom(size) if size else b"")
    with pytest.raises(ModelError, match="not a valid audiodenoise model file"):
        load_model(path)


def test_plain_safetensors_without_our_metadata(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(st_save(_tensors()))
    with pytest.raises(ModelError, match="not an audiodenoise model file \\(format None\\)"):
        load_model(path)


def test_wrong_format_tag(tmp_path):
    path = _write(tmp_path / "m.safetensors", format="deepfilternet")
    with pytest.raises(ModelError, match="not an audiodenoise model file \\(format 'deepfilternet'\\)"):
        load_model(path)


def test_newer_format_version(tmp_path):
    path = _write(tmp_path / "m.safetensors", format_version=str(FORMAT_VERSION + 1))
    with pytest.raises(ModelError, match=f"format version {FORMAT_VERSION + 1} is newer .* upgrade audiodenoise"):
        load_model(path)


def test_bad_format_version(tmp_path):
    path = _write(tmp_path / "m.safetensors", format_version="one")
    with pytest.raises(ModelError, match="bad format_version 'one'"):
        load_model(path)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ("{not json", "bad configuration"),
        (json.dumps({"features": FeatureConfig().to_dict()}), "bad configuration.*'model'"),
        (
            json.dumps({"model": {**TINY_MODEL.to_dict(), "heads": 4}, "features": FeatureConfig().to_dict()}),
            "bad configuration.*unknown key.*heads",
        ),
        (
            json.dumps({"model": TINY_MODEL.to_dict(), "features": FeatureConfig(n_fft=1024).to_dict()}),
            "model expects 257 bins, features give 513",
        ),
    ],
)
def test_bad_configuration(tmp_path, config, match):
    path = _write(tmp_path / "m.safetensors", config=config)
    with pytest.raises(ModelError, match=match):
        load_model(path)


def test_missing_keys(tmp_path):
    tensors = _tensors()
    del tensors["head.weight"], tensors["head.bias"]
    path = _write(tmp_path / "m.safetensors", tensors)
    with pytest.raises(ModelError, match="missing keys head.bias, head.weight"):
        load_model(path)


def test_unexpected_keys(tmp_path):
    path = _write(tmp_path / "m.safetensors", {**_tensors(), "extra.weight": torch.zeros(3)})
    with pytest.raises(ModelError, match="unexpected keys extra.weight"):
        load_model(path)


def test_many_missing_keys_are_summarised(tmp_path):
    tensors = {k: v for k, v in _tensors().items() if not k.startswith("encoder.")}
    path = _write(tmp_path / "m.safetensors", tensors)
    with pytest.raises(ModelError, match="missing keys encoder.* and \\d+ more"):
        load_model(path)


def test_wrong_shapes(tmp_path):
    tensors = _tensors()
    tensors["head.bias"] = torch.zeros(100)
    path = _write(tmp_path / "m.safetensors", tensors)
    with pytest.raises(ModelError, match="weight head.bias has shape \\[100\\], the model needs \\[257\\]"):
        load_model(path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_weights(tmp_path, bad):
    tensors = _tensors()
    tensors["encoder.0.0.weight"][0, 0, 0] = bad
    path = _write(tmp_path / "m.safetensors", tensors)
    with pytest.raises(ModelError, match="weight encoder.0.0.weight holds NaN or infinite values"):
        load_model(path)


class _Payload:
    """Unpickling this runs code: it creates the file named ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def test_a_pickle_payload_works_when_unpickled(tmp_path):
    # the control for the next test: this payload really runs when something unpickles it
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    torch.save({"weights": _tensors(), "config": _Payload(marker)}, path)
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("name", ["model.pt", "model.safetensors"])
def test_a_torch_pickle_file_is_refused_and_never_unpickled(tmp_path, name):
    marker = tmp_path / "pwned"
    path = tmp_path / name
    torch.save({"weights": _tensors(), "config": _Payload(marker)}, path)
    with pytest.raises(ModelError, match="not a valid audiodenoise model file"):
        load_model(path)
    assert not marker.exists()


def test_a_plain_pickle_file_is_refused_and_never_unpickled(tmp_path):
    import pickle

    marker = tmp_path / "pwned"
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ModelError, match="not a valid audiodenoise model file"):
        load_model(path)
    assert not marker.exists()


def test_loading_never_calls_pickle(tmp_path, monkeypatch):
    import pickle

    path = _write(tmp_path / "m.safetensors")

    def forbidden(*args, **kwargs):
        raise AssertionError("load_model unpickled something")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    assert load_model(path).model.config == TINY_MODEL


def test_oversized_file_is_refused_before_reading(tmp_path, monkeypatch):
    import audiodenoise.checkpoint as checkpoint

    path = _write(tmp_path / "m.safetensors")
    monkeypatch.setattr(checkpoint, "MAX_MODEL_BYTES", 1000)
    with pytest.raises(ModelError, match="too large for a model file"):
        load_model(path)
