"""smoothgrad_lib.metrics: hand-computed values, invariances, and agreement with Quantus, scikit-learn and scipy."""

import numpy as np
import pytest
import torch

from smoothgrad_lib.faithfulness import blur
from smoothgrad_lib.metrics import (
    brightest_share,
    dilate,
    far_share,
    localisation,
    mask_auc,
    neighbour_difference,
    pointing_game,
    rank_correlation,
    ranking_agreement,
    relevance_mass,
    relevance_rank,
    spatial_autocorrelation,
    ssim,
)
from smoothgrad_lib.stats import relative_change

MAP = torch.tensor([[0.1, 0.9, 0.3], [0.5, 0.2, 0.9], [-0.4, 0.0, 0.7]])


MASK = torch.tensor([[0, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.bool)


def random_case(seed: int, n: int = 6, size: int = 8, levels: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random maps (continuous, or with ties when quantised to ``levels`` values) and masks of about 30% of pixels."""
    g = torch.Generator().manual_seed(seed)
    maps = torch.rand(n, size, size, generator=g, dtype=torch.float64)
    if levels is not None:
        maps = (maps * levels).floor()
    masks = torch.rand(n, size, size, generator=g) < 0.3
    masks[:, 0, 0], masks[:, -1, -1] = True, False  # never empty, never full
    return maps, masks


def test_pointing_game_hand_computed():
    # The maximum 0.9 is tied at (0, 1), inside, and (1, 2), outside: any maximal pixel inside is a hit.
    assert pointing_game(MAP[None], MASK[None]).tolist() == [True]
    outside_max = MAP.clone()
    outside_max[1, 2] = 1.0
    assert pointing_game(outside_max[None], MASK[None]).tolist() == [False]


def test_relevance_mass_hand_computed():
    # Positive relevance: 0.1 + 0.9 + 0.3 + 0.5 + 0.2 + 0.9 + 0.7 = 3.6 in all, 0.9 + 0.5 + 0.7 = 2.1 inside;
    # -0.4 counts 0.
    assert relevance_mass(MAP[None], MASK[None]).item() == pytest.approx(2.1 / 3.6, rel=1e-6)


def test_relevance_mass_without_positive_relevance_is_nan():
    assert relevance_mass(-MAP.abs()[None], MASK[None]).isnan().item()


def test_relevance_rank_hand_computed():
    # K = 3; the top three are 0.9 (inside), 0.9 (outside), 0.7 (inside): 2 of 3.
    assert relevance_rank(MAP[None], MASK[None]).item() == pytest.approx(2 / 3)
    # K = 1 and the first place is a tie of two pixels, one inside: expected share 1/2.
    single = torch.zeros(3, 3, dtype=torch.bool)
    single[0, 1] = True
    assert relevance_rank(MAP[None], single[None]).item() == pytest.approx(0.5)


def test_mask_auc_hand_computed():
    # Inside {0.9, 0.5, 0.7} against outside {0.1, 0.3, 0.2, 0.9, -0.4, 0.0}: 18 pairs,
    # 0.9 wins 5 and ties 1 (5.5), 0.5 wins 5, 0.7 wins 5: AUC = 15.5 / 18.
    assert mask_auc(MAP[None], MASK[None]).item() == pytest.approx(15.5 / 18)


def test_constant_map_scores_chance():
    maps, masks = random_case(1)
    constant = torch.full_like(maps, 0.3)
    share = masks.flatten(1).double().mean(1)
    torch.testing.assert_close(relevance_rank(constant, masks), share)
    torch.testing.assert_close(mask_auc(constant, masks), torch.full_like(share, 0.5))
    assert pointing_game(constant, masks).all()


@pytest.mark.parametrize("transform", [torch.exp, lambda m: m**3 + 5, lambda m: 2 * m - 7])
def test_rank_metrics_are_invariant_to_increasing_transforms(transform):
    maps, masks = random_case(2, levels=5)  # many ties, also across the K-th place
    for metric in (relevance_rank, mask_auc):
        torch.testing.assert_close(metric(transform(maps), masks), metric(maps, masks), rtol=0, atol=1e-12)


def test_mask_auc_equals_scikit_learn_with_ties():
    from sklearn.metrics import roc_auc_score

    maps, masks = random_case(3, levels=4)
    expected = [roc_auc_score(m.flatten(), a.flatten()) for m, a in zip(masks.numpy(), maps.numpy(), strict=True)]
    np.testing.assert_allclose(mask_auc(maps, masks).numpy(), expected, rtol=1e-12)


def test_perfect_and_inverted_maps():
    _, masks = random_case(4)
    perfect = masks.double()
    assert mask_auc(perfect, masks).eq(1).all() and relevance_rank(perfect, masks).eq(1).all()
    assert relevance_mass(perfect, masks).eq(1).all() and pointing_game(perfect, masks).all()
    assert mask_auc(-perfect, masks).eq(0).all()


def test_dilate_square():
    masks = torch.zeros(2, 5, 5, dtype=torch.bool)
    masks[0, 2, 2] = True
    masks[1, 0, 0] = True
    grown = dilate(masks, 1)
    assert grown[0].nonzero().tolist() == [[r, c] for r in (1, 2, 3) for c in (1, 2, 3)]
    assert grown[1].nonzero().tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert dilate(masks, 2)[0].all()
    assert torch.equal(dilate(masks, 0), masks)


def test_localisation_bad_inputs():
    maps, masks = random_case(5)
    with pytest.raises(ValueError, match="empty"):
        mask_auc(maps, torch.zeros_like(masks))
    with pytest.raises(ValueError, match="whole image"):
        mask_auc(maps, torch.ones_like(masks))
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        relevance_mass(maps[0], masks[0])
    with pytest.raises(TypeError, match="bool"):
        pointing_game(maps, masks.float())
    with pytest.raises(ValueError, match="NaN"):
        relevance_rank(torch.full_like(maps, float("nan")), masks)
    with pytest.raises(ValueError, match="pixels"):
        dilate(masks, -1)


def test_localisation_agrees_with_quantus():
    import quantus  # dev extra; imported here because the import takes seconds

    maps, masks = random_case(6, n=8, size=16)  # continuous, so no ties for Quantus's argsort to break
    x, y = np.zeros((8, 3, 16, 16), np.float32), np.zeros(8, int)
    data = {
        "model": None,
        "x_batch": x,
        "y_batch": y,
        "a_batch": maps.numpy()[:, None],
        "s_batch": masks.numpy()[:, None],
    }
    options = {"abs": False, "normalise": False, "disable_warnings": True, "display_progressbar": False}
    pairs = [
        (quantus.PointingGame, pointing_game),
        (quantus.RelevanceMassAccuracy, relevance_mass),
        (quantus.RelevanceRankAccuracy, relevance_rank),
        (quantus.AUC, mask_auc),
    ]
    for metric, ours in pairs:
        theirs = np.asarray(metric(**options)(**data), dtype=np.float64)
        np.testing.assert_allclose(ours(maps, masks).double().numpy(), theirs, rtol=1e-12, err_msg=metric.__name__)


def test_rank_correlation_equals_scipy_spearman():
    from scipy.stats import spearmanr

    a, _ = random_case(7, levels=6)
    b = a + torch.randn(a.shape, generator=torch.Generator().manual_seed(0), dtype=a.dtype)
    expected = [spearmanr(p.flatten(), q.flatten()).statistic for p, q in zip(a.numpy(), b.numpy(), strict=True)]
    np.testing.assert_allclose(rank_correlation(a, b).numpy(), expected, rtol=1e-12)
    pairs = zip(a.numpy(), -b.numpy(), strict=True)
    flipped = [spearmanr(np.abs(p.flatten()), np.abs(q.flatten())).statistic for p, q in pairs]
    np.testing.assert_allclose(rank_correlation(a, -b, absolute=True).numpy(), flipped, rtol=1e-12)
    torch.testing.assert_close(rank_correlation(a, a.exp()), torch.ones(len(a), dtype=torch.float64))
    torch.testing.assert_close(rank_correlation(a, -a), -torch.ones(len(a), dtype=torch.float64))


def test_ssim_identical_maps_is_one_and_range_is_checked():
    a, _ = random_case(8, size=16)
    assert torch.allclose(ssim(a, a), torch.ones(len(a), dtype=torch.float64))
    assert (ssim(a, torch.rand(a.shape, generator=torch.Generator().manual_seed(1), dtype=a.dtype)) < 0.5).all()
    with pytest.raises(ValueError, match="data_range"):
        ssim(a * 3, a)


def test_relative_change_and_neighbour_difference_by_hand():
    a, b = torch.tensor([[3.0, 4.0]]), torch.tensor([[3.0, 5.0]])
    assert relative_change(a, b).item() == pytest.approx(0.2)
    with pytest.raises(ValueError, match="same shape"):
        relative_change(a, b[:, :1])
    maps = torch.tensor([[[0.0, 1.0], [0.0, 0.0]]])  # rows: |0-0|, |1-0| -> 0.5; columns: |1-0|, |0-0| -> 0.5
    assert neighbour_difference(maps).item() == pytest.approx(0.5)
    assert neighbour_difference(torch.ones(2, 5, 5)).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="B, H, W"):
        neighbour_difference(torch.ones(5, 5))


def test_brightest_share():
    maps = torch.zeros(2, 10, 10)
    maps[0, 0, 0] = 1.0  # all of it in the brightest pixel
    maps[1] = 1.0  # uniform: the brightest 1% hold 1%
    torch.testing.assert_close(brightest_share(maps), torch.tensor([1.0, 0.01]))
    with pytest.raises(ValueError, match="fraction"):
        brightest_share(maps, 0.0)


def test_far_share_and_localisation_by_hand():
    masks = torch.zeros(1, 12, 12, dtype=torch.bool)
    masks[0, 5:7, 5:7] = True
    maps = torch.zeros(1, 12, 12)
    maps[0, 5:7, 5:7] = 1.0  # inside
    maps[0, 4, 5] = 1.0  # one pixel away from the mask
    maps[0, 0, 0] = 2.0  # about 7 pixels away
    assert far_share(maps, masks, 4.0).item() == pytest.approx(2.0 / 3.0)
    scores = localisation(maps, masks, dilation=1, far=4.0)
    assert scores["mass"].item() == pytest.approx(4.0 / 7.0)
    assert scores["mass_dilated"].item() == pytest.approx(5.0 / 7.0)
    assert scores["far"].item() == pytest.approx(2.0 / 3.0)
    assert 0.5 < scores["auc"].item() < 1.0
    # Squaring the map changes the mass but not the rank-based AUC.
    squared = localisation(maps**2, masks, dilation=1)
    assert squared["auc"].item() == pytest.approx(scores["auc"].item())
    assert squared["mass"].item() != pytest.approx(scores["mass"].item())


def test_spatial_autocorrelation_is_zero_on_white_noise_and_ignores_offset_and_scale():
    generator = torch.Generator().manual_seed(0)
    white = torch.rand(4, 64, 64, generator=generator)
    # Null: independent pixels have no lag-1 correlation (s.e. about 1/64 per direction).
    assert spatial_autocorrelation(white).abs().max() < 0.05
    # A map that varies slowly in space: a Gaussian blur of the same noise is strongly autocorrelated.
    smooth = blur(white, 3.0)
    assert (spatial_autocorrelation(smooth) > 0.9).all()
    # Offset- and scale-free, unlike the neighbour difference.
    torch.testing.assert_close(spatial_autocorrelation(3 * smooth + 7), spatial_autocorrelation(smooth))
    assert not torch.allclose(neighbour_difference(3 * smooth + 7), neighbour_difference(smooth))
    # An exact known case: a horizontal ramp is perfectly correlated with its right neighbour; vertically constant
    # rows make the vertical pair identical too.
    ramp = torch.arange(16.0).expand(1, 8, 16)
    torch.testing.assert_close(spatial_autocorrelation(ramp), torch.ones(1))
    with pytest.raises(ValueError, match="B, H, W"):
        spatial_autocorrelation(white[0])


def test_ranking_agreement_is_spearman_between_the_tests_rankings_over_their_common_methods():
    scores = {
        "AUC": {"a": 0.9, "b": 0.8, "c": 0.6, "d": 0.5},
        "error": {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4},  # lower is better: the same order as AUC
        "curve": {"b": 0.3, "a": 0.2, "d": 0.1},  # scores three of the four, in another order
    }
    agreement = ranking_agreement(scores, {"AUC": 1, "error": -1, "curve": 1})
    assert agreement.dtype == torch.float64 and agreement.shape == (3, 3)
    assert torch.equal(agreement, agreement.T) and torch.equal(agreement.diagonal(), torch.ones(3, dtype=torch.float64))
    assert agreement[0, 1] == 1.0
    expected = rank_correlation(torch.tensor([[0.9, 0.8, 0.5]]), torch.tensor([[0.2, 0.3, 0.1]]))[0]
    assert agreement[2, 0] == pytest.approx(float(expected)) and agreement[2, 0] == 0.5
    assert ranking_agreement(scores)[0, 1] == -1.0  # without directions, higher is better everywhere


def test_ranking_agreement_rejects_missing_signs_and_too_few_common_methods():
    with pytest.raises(ValueError, match="direction"):
        ranking_agreement({"a": {"x": 1.0, "y": 2.0}, "b": {"x": 1.0, "y": 2.0}}, {"a": 1})
    with pytest.raises(ValueError, match="common"):
        ranking_agreement({"a": {"x": 1.0, "y": 2.0}, "b": {"x": 1.0, "z": 2.0}})
