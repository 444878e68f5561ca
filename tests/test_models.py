"""Offline models and images: the default model's predictions, torchvision's offline error, user images."""

import socket

import numpy as np
import pytest
import torch
from PIL import Image

from smoothgrad_lib import PHOTOS, load_image
from smoothgrad_lib.models import IMAGENET_MEAN, IMAGENET_STD, MODELS, REGISTRY, LoadedModel, Normalize, load_model
from smoothgrad_lib.precision import current_settings, float32_precision
from smoothgrad_lib.twins import TWINS


@pytest.fixture
def offline(monkeypatch, tmp_path) -> list[str]:
    """No network and no cached weights: every host name fails to resolve, as it does offline. Returns the list of
    host names that were looked up."""
    attempts = []

    def no_network(host, *args, **kwargs):
        attempts.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    return attempts


def test_lite0_classifies_the_bundled_photos(lite0):
    assert lite0.model.training is False
    top1 = {
        name: lite0.top_k(lite0.preprocess(load_image(name, size=None)), k=1)[0][0][0]
        for name in ("chelsea", "coffee", "rocket")
    }
    assert top1["chelsea"] in {"Egyptian cat", "tiger cat", "tabby"}
    assert top1["coffee"] in {"espresso", "cup"}
    assert top1["rocket"] in {"missile", "projectile"}


def test_top_k_runs_in_full_float32_whatever_the_callers_setting(relu_twin, settings_probe):
    probe = settings_probe(relu_twin.model)
    loaded = LoadedModel("probe", probe, relu_twin.categories, 64, relu_twin.mean, relu_twin.std)
    with float32_precision():
        full = current_settings()
    with float32_precision(tf32=True):  # the caller allows TF32 (cuDNN's default)
        callers = current_settings()
        top = loaded.top_k(torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)), k=2)
        assert current_settings() == callers
    assert probe.seen == [full] and full != callers
    assert [len(row) for row in top] == [2, 2] and all(0 <= p <= 1 for row in top for _, p in row)


def test_lite0_expects_tensorflow_normalisation_not_imagenet_mean_std(lite0):
    """(x - 127/255) / (128/255), the TF-Lite convention, gives the true classes more probability than ImageNet
    mean/std."""
    network = lite0.model[1]
    imagenet = torch.nn.Sequential(Normalize(IMAGENET_MEAN, IMAGENET_STD), network).eval()
    true_classes = {"chelsea": [281, 282, 285], "coffee": [967]}  # cats; espresso
    for name, classes in true_classes.items():
        x = load_image(name)[None]
        with torch.no_grad():
            ours = lite0.model(x).softmax(1)[0, classes].sum()
            theirs = imagenet(x).softmax(1)[0, classes].sum()
        assert ours > theirs, name


def test_torchvision_architecture_and_preprocessing_without_weights():
    loaded = load_model("resnet18", device="cpu", pretrained=False)
    assert loaded.input_size == 224 and len(loaded.categories) == 1000
    assert loaded.mean == IMAGENET_MEAN and not loaded.model.training
    assert loaded.model(torch.rand(2, 3, 224, 224)).shape == (2, 1000)


@pytest.mark.parametrize("name", [name for name, entry in REGISTRY.items() if not entry.offline])
def test_online_weights_offline_give_one_clear_error_after_one_attempt(name, offline):
    with pytest.raises(RuntimeError, match=f"could not download the pretrained weights of '{name}'") as info:
        load_model(name, device="cpu")
    assert offline == ["download.pytorch.org"], "one look-up, no retries"
    assert "efficientnet-lite0" in str(info.value) and "Name or service not known" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize("name", [name for name, entry in REGISTRY.items() if entry.offline])
def test_offline_models_load_without_the_network(name, offline):
    loaded = load_model(name, device="cpu")
    assert offline == [], "no host name was looked up"
    assert loaded.name == name and not loaded.model.training
    x = torch.rand(1, 3, loaded.input_size, loaded.input_size)
    assert loaded.model(x).shape == (1, len(loaded.categories))


def test_one_registry_names_every_model_and_every_shapes_twin():
    assert MODELS == tuple(REGISTRY) and MODELS[0] == "efficientnet-lite0"
    assert {f"shapes-{twin}" for twin in TWINS} <= set(MODELS)
    assert all(entry.description for entry in REGISTRY.values())


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown model 'alexnet'; choose one of " + ", ".join(MODELS)):
        load_model("alexnet")


@pytest.mark.parametrize("name", PHOTOS)
def test_every_bundled_photo_loads(name):
    image = load_image(name)
    assert image.shape == (3, 224, 224) and image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1 and image.std() > 0.01


@pytest.mark.parametrize(
    ("mode", "suffix"),
    [("RGB", ".png"), ("L", ".png"), ("RGBA", ".png"), ("P", ".png"), ("LA", ".png"), ("RGB", ".jpg"), ("L", ".jpg")],
)
def test_user_images_of_each_mode_become_rgb(tmp_path, mode, suffix):
    pixels = (np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8)
    path = tmp_path / f"image{suffix}"
    Image.fromarray(pixels).convert(mode).save(path)
    image = load_image(path, size=32)
    assert image.shape == (3, 32, 32) and 0 <= image.min() and image.max() <= 1
    original = load_image(str(path), size=None)
    assert original.shape == (3, 40, 60)


def test_transparent_pixels_become_white(tmp_path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(path)
    assert torch.equal(load_image(path, size=None), torch.ones(3, 8, 8))


def test_missing_unreadable_and_unknown_images_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a bundled photo"):
        load_image("no-such-photo")
    with pytest.raises(FileNotFoundError, match="missing.png' is neither a bundled photo"):
        load_image(tmp_path / "missing.png")
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match="could not read"):
        load_image(bad)
    with pytest.raises(ValueError, match="size must be a positive int or None, got 0"):
        load_image("chelsea", size=0)


@pytest.mark.parametrize("name", [f"shapes-{twin}" for twin in TWINS])
def test_shapes_models_through_load_model(name):
    loaded = load_model(name, device="cpu")
    assert loaded.categories == ("circle", "square", "triangle", "cross") and loaded.input_size == 64
    assert next(loaded.model.parameters()).device.type == "cpu" and not loaded.model.training
