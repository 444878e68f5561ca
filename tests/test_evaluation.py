"""smoothgrad_lib.evaluation: hand-computed values, invariances, and agreement with Quantus and scikit-learn."""

import numpy as np
import pytest
import torch

from smoothgrad_lib import evaluation as ev

# A 3x3 map with a tie at the maximum (one copy inside the mask, one outside) and a negative value.
MAP = torch.tensor([[0.1, 0.9, 0.3], [0.5, 0.2, 0.9], [-0.4, 0.0, 0.7]])
MASK = torch.tensor([[0, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.bool)


def random_case(seed: int, n: int = 6, size: int = 8, levels: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random maps (continuous, or with ties when quantised to ``levels`` values) and masks of about 30% of the pixels."""
    g = torch.Generator().manual_seed(seed)
    maps = torch.rand(n, size, size, generator=g, dtype=torch.float64)
    if levels is not None:
        maps = (maps * levels).floor()
    masks = torch.rand(n, size, size, generator=g) < 0.3
    masks[:, 0, 0], masks[:, -1, -1] = True, False  # never empty, never full
    return maps, masks


def test_pointing_game_hand_computed():
    # The maximum 0.9 is tied at (0, 1), inside, and (1, 2), outside: any maximal pixel inside is a hit.
    assert ev.pointing_game(MAP[None], MASK[None]).tolist() == [True]
    outside_max = MAP.clone()
    outside_max[1, 2] = 1.0
    assert ev.pointing_game(outside_max[None], MASK[None]).tolist() == [False]


def test_relevance_mass_hand_computed():
    # Positive relevance: 0.1 + 0.9 + 0.3 + 0.5 + 0.2 + 0.9 + 0.7 = 3.6 in all, 0.9 + 0.5 + 0.7 = 2.1 inside; -0.4 counts 0.
    assert ev.relevance_mass(MAP[None], MASK[None]).item() == pytest.approx(2.1 / 3.6, rel=1e-6)


def test_relevance_mass_without_positive_relevance_is_nan():
    assert ev.relevance_mass(-MAP.abs()[None], MASK[None]).isnan().item()


def test_relevance_rank_hand_computed():
    # K = 3; the top three are 0.9 (inside), 0.9 (outside), 0.7 (inside): 2 of 3.
    assert ev.relevance_rank(MAP[None], MASK[None]).item() == pytest.approx(2 / 3)
    # K = 1 and the first place is a tie of two pixels, one inside: expected share 1/2.
    single = torch.zeros(3, 3, dtype=torch.bool)
    single[0, 1] = True
    assert ev.relevance_rank(MAP[None], single[None]).item() == pytest.approx(0.5)


def test_mask_auc_hand_computed():
    # Inside {0.9, 0.5, 0.7} against outside {0.1, 0.3, 0.2, 0.9, -0.4, 0.0}: 18 pairs,
    # 0.9 wins 5 and ties 1 (5.5), 0.5 wins 5, 0.7 wins 5: AUC = 15.5 / 18.
    assert ev.mask_auc(MAP[None], MASK[None]).item() == pytest.approx(15.5 / 18)


def test_constant_map_scores_chance():
    maps, masks = random_case(1)
    constant = torch.full_like(maps, 0.3)
    share = masks.flatten(1).double().mean(1)
    torch.testing.assert_close(ev.relevance_rank(constant, masks), share)
    torch.testing.assert_close(ev.mask_auc(constant, masks), torch.full_like(share, 0.5))
    assert ev.pointing_game(constant, masks).all()


@pytest.mark.parametrize("transform", [torch.exp, lambda m: m**3 + 5, lambda m: 2 * m - 7])
def test_rank_metrics_are_invariant_to_increasing_transforms(transform):
    maps, masks = random_case(2, levels=5)  # many ties, also across the K-th place
    for metric in (ev.relevance_rank, ev.mask_auc):
        torch.testing.assert_close(metric(transform(maps), masks), metric(maps, masks), rtol=0, atol=1e-12)


def test_mask_auc_equals_scikit_learn_with_ties():
    from sklearn.metrics import roc_auc_score

    maps, masks = random_case(3, levels=4)
    expected = [roc_auc_score(m.flatten(), a.flatten()) for m, a in zip(masks.numpy(), maps.numpy())]
    np.testing.assert_allclose(ev.mask_auc(maps, masks).numpy(), expected, rtol=1e-12)


def test_perfect_and_inverted_maps():
    _, masks = random_case(4)
    perfect = masks.double()
    assert ev.mask_auc(perfect, masks).eq(1).all() and ev.relevance_rank(perfect, masks).eq(1).all()
    assert ev.relevance_mass(perfect, masks).eq(1).all() and ev.pointing_game(perfect, masks).all()
    assert ev.mask_auc(-perfect, masks).eq(0).all()


def test_dilate_square():
    masks = torch.zeros(2, 5, 5, dtype=torch.bool)
    masks[0, 2, 2] = True
    masks[1, 0, 0] = True
    grown = ev.dilate(masks, 1)
    assert grown[0].nonzero().tolist() == [[r, c] for r in (1, 2, 3) for c in (1, 2, 3)]
    assert grown[1].nonzero().tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert ev.dilate(masks, 2)[0].all()
    assert torch.equal(ev.dilate(masks, 0), masks)


def test_localisation_bad_inputs():
    maps, masks = random_case(5)
    with pytest.raises(ValueError, match="empty"):
        ev.mask_auc(maps, torch.zeros_like(masks))
    with pytest.raises(ValueError, match="whole image"):
        ev.mask_auc(maps, torch.ones_like(masks))
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        ev.relevance_mass(maps[0], masks[0])
    with pytest.raises(TypeError, match="bool"):
        ev.pointing_game(maps, masks.float())
    with pytest.raises(ValueError, match="NaN"):
        ev.relevance_rank(torch.full_like(maps, float("nan")), masks)
    with pytest.raises(ValueError, match="pixels"):
        ev.dilate(masks, -1)


def test_localisation_agrees_with_quantus():
    import quantus  # dev extra; imported here because the import takes seconds
    maps, masks = random_case(6, n=8, size=16)  # continuous, so no ties for Quantus's argsort to break
    x, y = np.zeros((8, 3, 16, 16), np.float32), np.zeros(8, int)
    data = dict(model=None, x_batch=x, y_batch=y, a_batch=maps.numpy()[:, None], s_batch=masks.numpy()[:, None])
    options = dict(abs=False, normalise=False, disable_warnings=True, display_progressbar=False)
    pairs = [
        (quantus.PointingGame, ev.pointing_game),
        (quantus.RelevanceMassAccuracy, ev.relevance_mass),
        (quantus.RelevanceRankAccuracy, ev.relevance_rank),
        (quantus.AUC, ev.mask_auc),
    ]
    for metric, ours in pairs:
        theirs = np.asarray(metric(**options)(**data), dtype=np.float64)
        np.testing.assert_allclose(ours(maps, masks).double().numpy(), theirs, rtol=1e-12, err_msg=metric.__name__)
