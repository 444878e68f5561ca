"""smoothgrad_lib.faithfulness: deletion and insertion curves by their definition, AUC, AOPC, the blurs."""

import math

import pytest
import torch
from torchvision.transforms import functional as TF

from smoothgrad_lib.faithfulness import (
    BASELINE_BLUR_SIGMA,
    aopc,
    blur,
    curve_auc,
    deletion_curve,
    insertion_curve,
)
from smoothgrad_lib.precision import current_settings, float32_precision


def test_deletion_in_order_of_contribution_beats_random_order(linear_contributions):
    model, x, w = linear_contributions()
    contribution = (w * x).sum(1)  # a pixel's share of the logit, all channels together
    g = torch.Generator().manual_seed(0)
    deletion = curve_auc(deletion_curve(model, x, contribution, 0, baseline=0.0, steps=12))
    insertion = curve_auc(insertion_curve(model, x, contribution, 0, baseline=0.0, steps=12))
    for _ in range(5):
        random_map = torch.rand(contribution.shape, generator=g)
        assert (deletion < curve_auc(deletion_curve(model, x, random_map, 0, baseline=0.0, steps=12))).all()
        assert (insertion > curve_auc(insertion_curve(model, x, random_map, 0, baseline=0.0, steps=12))).all()


def test_curves_follow_their_definition_pixel_by_pixel(linear_contributions):
    model, x, _ = linear_contributions(1, size=3)
    maps = torch.rand(4, 3, 3, generator=torch.Generator().manual_seed(2))
    base = torch.rand(x.shape, generator=torch.Generator().manual_seed(3))
    deletion = deletion_curve(model, x, maps, baseline=base, steps=9)
    insertion = insertion_curve(model, x, maps, baseline=base, steps=9)
    order = maps.flatten(1).argsort(1, descending=True)
    target = model(x).argmax(1)
    for b in range(4):
        for k in range(10):
            removed = torch.zeros(9, dtype=torch.bool)
            removed[order[b, :k]] = True
            removed = removed.reshape(1, 3, 3)
            deleted, inserted = torch.where(removed, base[b], x[b]), torch.where(removed, x[b], base[b])
            p_deleted, p_inserted = (model(image[None]).softmax(1)[0, target[b]] for image in (deleted, inserted))
            assert deletion[b, k].item() == pytest.approx(p_deleted.item(), abs=1e-6)
            assert insertion[b, k].item() == pytest.approx(p_inserted.item(), abs=1e-6)


def test_curves_do_not_depend_on_batch_size_and_ties_are_deterministic(linear_contributions):
    model, x, _ = linear_contributions(2)
    constant = torch.zeros(x.shape[0], *x.shape[2:])  # all tied
    options = {"baseline": "mean", "steps": 6}
    raster = deletion_curve(model, x, constant, **options)
    torch.testing.assert_close(deletion_curve(model, x, constant, batch_size=1, **options), raster)
    shuffled = [
        deletion_curve(model, x, constant, generator=torch.Generator().manual_seed(s), **options) for s in (5, 5, 6)
    ]
    assert torch.equal(shuffled[0], shuffled[1]) and not torch.equal(shuffled[0], shuffled[2])
    assert not torch.equal(shuffled[0], raster)


@pytest.mark.parametrize("curve", [deletion_curve, insertion_curve])
def test_every_forward_pass_of_a_curve_is_in_full_float32_whatever_the_callers_setting(
    curve, linear_contributions, settings_probe
):
    model, x, w = linear_contributions()
    probe = settings_probe(model)
    with float32_precision():
        full = current_settings()
    with float32_precision(tf32=True):  # the caller allows TF32 (cuDNN's default)
        callers = current_settings()
        curve(probe, x, (w * x).sum(1), baseline=0.0, steps=4)
        assert current_settings() == callers
    assert len(probe.seen) >= 2 and set(probe.seen) == {full} != {callers}  # the clean pass and the curve's


def test_blur_convolves_in_full_float32_whatever_the_callers_setting(monkeypatch):
    seen = []
    gaussian_blur = TF.gaussian_blur
    monkeypatch.setattr(TF, "gaussian_blur", lambda *args: seen.append(current_settings()) or gaussian_blur(*args))
    with float32_precision():
        full = current_settings()
    with float32_precision(tf32=True):
        callers = current_settings()
        blur(torch.rand(1, 3, 8, 8), 1.0)
        assert current_settings() == callers
    assert seen == [full] and full != callers


def test_curve_baselines(linear_contributions):
    model, x, w = linear_contributions(3)
    maps = (w * x).sum(1)
    target = model(x).softmax(1)[:, 0]
    for baseline, image in [(0.5, torch.full_like(x, 0.5)), ("mean", x.mean((2, 3), keepdim=True).expand_as(x))]:
        curve = deletion_curve(model, x, maps, 0, baseline=baseline, steps=4)
        torch.testing.assert_close(curve[:, 0], target)
        torch.testing.assert_close(curve[:, -1], model(image).softmax(1)[:, 0])
        torch.testing.assert_close(insertion_curve(model, x, maps, 0, baseline=baseline, steps=4)[:, -1], target)
    blurred = deletion_curve(model, x, maps, 0, baseline="blur", steps=4)[:, -1]
    torch.testing.assert_close(blurred, model(blur(x, BASELINE_BLUR_SIGMA)).softmax(1)[:, 0])
    with pytest.raises(ValueError, match="baseline"):
        deletion_curve(model, x, maps, baseline="zeros")
    with pytest.raises(ValueError, match="shape of x"):
        deletion_curve(model, x, maps, baseline=x[0])
    with pytest.raises(ValueError, match="steps"):
        insertion_curve(model, x, maps, baseline=0.0, steps=0)
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        insertion_curve(model, x, maps[0], baseline=0.0)


def test_curve_auc_and_aopc():
    curve = torch.tensor([[1.0, 0.5, 0.0], [1.0, 1.0, 1.0], [0.8, 0.2, 0.2]])
    torch.testing.assert_close(curve_auc(curve), torch.tensor([0.5, 1.0, 0.35]))
    # AOPC: mean over k = 0..2 of p0 - pk.
    torch.testing.assert_close(aopc(curve), torch.tensor([0.5, 0.0, 0.4]))


def test_blur_keeps_the_total_and_spreads_a_point_of_a_map_or_an_image():
    maps = torch.zeros(1, 21, 21, dtype=torch.float64)
    maps[0, 10, 10] = 1.0
    blurred = blur(maps, 2.0)
    assert blurred.dtype == torch.float64 and blurred.sum().item() == pytest.approx(1.0, abs=1e-12)
    # A 2-D Gaussian of sd 2: the centre holds about 1 / (2 pi 4) of the mass, sampled on the grid.
    assert blurred[0, 10, 10].item() == pytest.approx(1 / (8 * math.pi), rel=0.02)
    # Separable, and the same on a map (B, H, W) and on a one-channel image (B, 1, H, W).
    assert torch.equal(blur(maps[:, None], 2.0)[:, 0], blurred)
    torch.testing.assert_close(blurred[0], blurred[0, 10][None] * blurred[0, :, 10][:, None] / blurred[0, 10, 10])
    with pytest.raises(ValueError, match="sigma must be > 0"):
        blur(maps, 0.0)
