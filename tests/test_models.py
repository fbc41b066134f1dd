"""The three fusion nets: shapes for odd and tiny sizes, N-input focusmap, weight maps, cost
figures, safetensors checkpoints (round trip, corrupted files) and the shipped weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from mfif.errors import ConfigError, ModelFileError  # noqa: E402
from mfif.train.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from mfif.train.models import MODELS, build_model, count_parameters, macs_per_pixel  # noqa: E402

WEIGHTS = Path(__file__).resolve().parent.parent / "train" / "weights"


pytestmark = pytest.mark.usefixtures("torch_one_thread")


VARIANTS = [("xu2018", {}), ("xu2018", {"channels": 1}), ("mustafa2019", {}), ("mustafa2019", {"channels": 1}),
            ("focusmap", {}), ("focusmap", {"scale": 2}), ("focusmap", {"scale": 4})]


def small(name: str, config: dict):
    """A narrow copy of each model so the shape tests stay fast (same layers, fewer filters)."""
    narrow = {"xu2018": {"filters": 8}, "mustafa2019": {"features": 8, "branch": 4}}.get(name, {})
    torch.manual_seed(0)
    return build_model(name, **narrow, **config).eval()


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("keepdim", [False, True])
def test_sum_over_equals_torch_sum_and_mean(dim, keepdim):
    from mfif.train.models.focusmap import sum_over

    x = torch.rand(1, 3, 2, 9, 11)
    assert torch.allclose(sum_over(x, dim, keepdim=keepdim), x.sum(dim, keepdim=keepdim), atol=1e-6)
    assert torch.allclose(sum_over(x, dim, mean=True, keepdim=keepdim), x.mean(dim, keepdim=keepdim), atol=1e-6)


@pytest.mark.parametrize("name,config", VARIANTS)
@pytest.mark.parametrize("height,width", [(97, 131), (5, 7)])
def test_output_shape_equals_input_shape(name, config, height, width):
    model = small(name, config)
    channels = config.get("channels", 3)
    sources = torch.rand(2, 2, channels, height, width)
    with torch.no_grad():
        fused = model(sources)
    assert fused.shape == (2, channels, height, width)
    assert torch.isfinite(fused).all()


@pytest.mark.parametrize("scale", [1, 2])
def test_focusmap_takes_any_number_of_inputs_and_weights_sum_to_one(scale):
    model = small("focusmap", {"scale": scale})
    for count in (2, 3, 5):
        sources = torch.rand(1, count, 3, 33, 47)
        with torch.no_grad():
            fused, weights = model(sources, return_weights=True)
        assert fused.shape == (1, 3, 33, 47) and weights.shape == (1, count, 33, 47)
        assert weights.min() >= 0
        torch.testing.assert_close(weights.sum(dim=1), torch.ones(1, 33, 47), atol=1e-5, rtol=0)
        # The fused image is the weighted sum of the sources: never outside their range per pixel.
        assert (fused >= sources.min(dim=1).values - 1e-5).all() and (fused <= sources.max(dim=1).values + 1e-5).all()


def test_focusmap_is_symmetric_in_its_inputs():
    model = small("focusmap", {"scale": 2})
    sources = torch.rand(1, 3, 3, 40, 36)
    with torch.no_grad():
        fused, weights = model(sources, return_weights=True)
        fused_swapped, weights_swapped = model(sources[:, [2, 0, 1]], return_weights=True)
    torch.testing.assert_close(fused, fused_swapped, atol=1e-5, rtol=0)
    torch.testing.assert_close(weights[:, [2, 0, 1]], weights_swapped, atol=1e-5, rtol=0)


def test_focusmap_temperature_and_bilinear_weights():
    """``temperature`` T divides the scores before the softmax (T = 1 adds nothing, so older
    checkpoints load unchanged); ``guide_radius`` 0 brings the weights up bilinearly (what the guided
    filter reduces to at radius 0), still summing to 1."""
    sources = torch.rand(1, 2, 3, 64, 96)
    sharp = small("focusmap", {"scale": 4, "temperature": 0.1})
    plain = small("focusmap", {"scale": 4})
    plain.load_state_dict(sharp.state_dict())
    with torch.no_grad():
        plain.head.weight /= 0.1
        plain.head.bias /= 0.1
        torch.testing.assert_close(sharp(sources), plain(sources), atol=1e-5, rtol=0)
    assert small("focusmap", {}).config["temperature"] == 1.0
    bilinear = small("focusmap", {"scale": 4, "guide_radius": 0})
    radius_tiny_eps = small("focusmap", {"scale": 4, "guide_radius": 0, "guide_eps": 1.0})
    with torch.no_grad():
        fused, weights = bilinear(sources, return_weights=True)
        torch.testing.assert_close(weights.sum(dim=1), torch.ones(1, 64, 96), atol=1e-5, rtol=0)
        torch.testing.assert_close(fused, radius_tiny_eps(sources), atol=1e-6, rtol=0)   # eps unused
        low = torch.softmax(bilinear.scores(*_low_inputs(sources, 4)), dim=1)
        expected = torch.nn.functional.interpolate(low, size=(64, 96), mode="bilinear", align_corners=False)
        torch.testing.assert_close(weights, expected, atol=1e-6, rtol=0)
    # vote_radius: a one-pixel island of source 1 in a field of source 0 follows its surroundings.
    scores = torch.zeros(1, 2, 9, 9)
    scores[0, 0] = 1.0
    scores[0, :, 4, 4] = torch.tensor([0.0, 1.0])
    voting = small("focusmap", {"temperature": 0.1, "vote_radius": 1})
    assert small("focusmap", {"temperature": 0.1}).decide(scores / 0.1)[0, 1, 4, 4] > 0.99
    decided = voting.decide(scores / 0.1)
    assert decided[0, 0].min() > 0.99
    torch.testing.assert_close(decided.sum(dim=1), torch.ones(1, 9, 9))
    for bad in ({"temperature": 0}, {"guide_radius": -1}, {"vote_radius": -1}):
        with pytest.raises(ConfigError):
            build_model("focusmap", **bad)


def test_receptive_radius_of_a_saturated_focusmap():
    """A low temperature saturates the softmax (zero gradients in float32): the radius is measured
    on the same net at temperature 1 (FusionNet.receptive_probe), not read as 0."""
    from mfif.train.models import receptive_radius

    warm = small("focusmap", {"scale": 4, "guide_radius": 0})
    cold = small("focusmap", {"scale": 4, "guide_radius": 0, "temperature": 0.001, "vote_radius": 1})
    cold.load_state_dict(warm.state_dict())
    assert receptive_radius(cold) >= receptive_radius(warm) > 0
    assert cold.temperature == 0.001


def _low_inputs(sources, scale):
    from mfif.train.models.focusmap import box_filter

    grey = sources.mean(dim=2)
    detail = (grey - box_filter(grey, 1)).abs()
    return (torch.nn.functional.avg_pool2d(grey, scale), torch.nn.functional.avg_pool2d(detail, scale))


def test_cost_figures():
    for name in MODELS:
        model = build_model(name)
        assert count_parameters(model) > 0 and macs_per_pixel(model) > 0
    full, half = build_model("focusmap", scale=1), build_model("focusmap", scale=2)
    assert count_parameters(full) == count_parameters(half)
    # The scale knob runs the net on a quarter of the pixels.
    assert 3.5 < macs_per_pixel(full) / macs_per_pixel(half) < 4.5


def test_unknown_model_and_bad_config():
    with pytest.raises(ConfigError, match="unknown model 'unet'"):
        build_model("unet")
    with pytest.raises(ConfigError, match="bad config"):
        build_model("focusmap", colour=True)
    with pytest.raises(ConfigError):
        build_model("xu2018", channels=2)


@pytest.mark.parametrize("name,config", [("xu2018", {"channels": 1}), ("mustafa2019", {}), ("focusmap", {"scale": 2})])
def test_checkpoint_round_trip(tmp_path, name, config):
    model = small(name, config)
    path = save_checkpoint(tmp_path / f"{name}.safetensors", model, {"note": "test"})
    loaded = load_checkpoint(path)
    assert loaded.model.name == name and loaded.model.config == model.config
    assert loaded.metadata["note"] == "test" and len(loaded.sha256) == 64
    sources = torch.rand(1, 2, config.get("channels", 3), 30, 42)
    with torch.no_grad():
        assert torch.equal(model(sources), loaded.model(sources))


def test_corrupted_truncated_and_foreign_checkpoints(tmp_path):
    from safetensors.torch import save_file

    path = save_checkpoint(tmp_path / "good.safetensors", small("focusmap", {}))
    data = path.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01 not safetensors" * 10)
    for bad in (truncated, garbage):
        with pytest.raises(ModelFileError, match="truncated or corrupted"):
            load_checkpoint(bad)
    with pytest.raises(ModelFileError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign))
    with pytest.raises(ModelFileError, match="no mfif model name"):
        load_checkpoint(foreign)
    # Right header, wrong tensors (config says 32 features).
    mismatched = tmp_path / "mismatched.safetensors"
    model = small("focusmap", {})
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    config = dict(model.config, features=model.config["features"] * 2)
    save_file(state, str(mismatched), metadata={"mfif.model": "focusmap", "mfif.config": json.dumps(config)})
    with pytest.raises(ModelFileError, match="does not match"):
        load_checkpoint(mismatched)


@pytest.fixture(scope="module")
def validation_pairs():
    from mfif.paths import shared_data_dir
    from mfif.train.data import SynthConfig, validation_set

    shared = shared_data_dir()
    if shared is None or not (shared / "sharp").is_dir():
        pytest.skip("the shared photos (../shared/data/sharp) are absent")
    return validation_set(shared / "sharp", SynthConfig(crop=128), count=6)


@pytest.mark.parametrize("name", list(MODELS))
def test_shipped_weights_fuse_better_than_the_pixel_average(name, validation_pairs):
    from mfif.train.losses import psnr

    path = WEIGHTS / f"{name}.safetensors"
    if not path.is_file():
        pytest.skip(f"no shipped weights at {path}")
    checkpoint = load_checkpoint(path)
    assert checkpoint.model.name == name and path.stat().st_size < 5_000_000
    sources = torch.stack([pair["sources"] for pair in validation_pairs])
    truth = torch.stack([pair["truth"] for pair in validation_pairs])
    with torch.no_grad():
        fused = checkpoint.model(sources).clamp(0, 1)
    # On the fixed validation split (photos never trained on) every shipped net beats the average.
    assert psnr(fused, truth).mean() > psnr(sources.mean(dim=1), truth).mean() + 2.0
