"""smoothgrad_lib.evaluation: hand-computed values, invariances, and agreement with Quantus and scikit-learn."""

import numpy as np
import pytest
import torch

from smoothgrad_lib.faithfulness import BASELINE_BLUR_SIGMA, aopc, blur, curve_auc, deletion_curve, insertion_curve
from smoothgrad_lib.metrics import (
    dilate,
    mask_auc,
    pointing_game,
    rank_correlation,
    relevance_mass,
    relevance_rank,
    ssim,
)
from smoothgrad_lib.randomisation import randomize_layers

# A 3x3 map with a tie at the maximum (one copy inside the mask, one outside) and a negative value.
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


# --- similarity between maps ---------------------------------------------------------------------------------------


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


# --- deletion and insertion -------------------------------------------------------------------------------------------


def linear_model(seed: int = 0, channels: int = 2, size: int = 6) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """Logits (w.x - 10, 0), so p(class 0) = sigmoid(w.x - 10), with w.x = 20 on average and every w_i x_i > 0."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(4, channels, size, size, generator=g) + 0.1
    w = torch.rand(channels, size, size, generator=g) + 0.01
    w = w * 20 / (w * x).flatten(1).sum(1).mean()
    linear = torch.nn.Linear(channels * size * size, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.stack([w.flatten(), torch.zeros(w.numel())]))
        linear.bias.copy_(torch.tensor([-10.0, 0.0]))
    return torch.nn.Sequential(torch.nn.Flatten(), linear).eval(), x, w


def test_deletion_in_order_of_contribution_beats_random_order():
    model, x, w = linear_model()
    contribution = (w * x).sum(1)  # a pixel's share of the logit, all channels together
    g = torch.Generator().manual_seed(0)
    deletion = curve_auc(deletion_curve(model, x, contribution, 0, baseline=0.0, steps=12))
    insertion = curve_auc(insertion_curve(model, x, contribution, 0, baseline=0.0, steps=12))
    for _ in range(5):
        random_map = torch.rand(contribution.shape, generator=g)
        assert (deletion < curve_auc(deletion_curve(model, x, random_map, 0, baseline=0.0, steps=12))).all()
        assert (insertion > curve_auc(insertion_curve(model, x, random_map, 0, baseline=0.0, steps=12))).all()


def test_curves_follow_their_definition_pixel_by_pixel():
    model, x, _ = linear_model(1, size=3)
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


def test_curves_do_not_depend_on_batch_size_and_ties_are_deterministic():
    model, x, _ = linear_model(2)
    constant = torch.zeros(x.shape[0], *x.shape[2:])  # all tied
    options = {"baseline": "mean", "steps": 6}
    raster = deletion_curve(model, x, constant, **options)
    torch.testing.assert_close(deletion_curve(model, x, constant, batch_size=1, **options), raster)
    shuffled = [
        deletion_curve(model, x, constant, generator=torch.Generator().manual_seed(s), **options) for s in (5, 5, 6)
    ]
    assert torch.equal(shuffled[0], shuffled[1]) and not torch.equal(shuffled[0], shuffled[2])
    assert not torch.equal(shuffled[0], raster)


def test_curve_baselines():
    model, x, w = linear_model(3)
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


# --- model randomisation ---------------------------------------------------------------------------------------------


def shapes_model() -> torch.nn.Module:
    from smoothgrad_lib.twins import load_twin

    return load_twin("relu")


def test_cascading_randomisation_changes_the_top_layers_only_and_never_the_model():
    model = shapes_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layers = [name for name, m in model.named_modules() if list(m.parameters(recurse=False))]
    steps = list(randomize_layers(model, generator=torch.Generator().manual_seed(0)))
    assert [name for name, _ in steps] == layers[::-1]
    for j, (_, randomised) in enumerate(steps):
        assert not randomised.training
        state = randomised.state_dict()
        for name in layers:
            changed = layers.index(name) >= len(layers) - 1 - j  # the top j + 1 layers
            for pname, p in randomised.get_submodule(name).named_parameters(recurse=False):
                original = before[f"{name}.{pname}"]
                assert (p != original).all() if changed else torch.equal(p, original), (j, name, pname)
        for key, value in before.items():  # batch-norm running statistics are kept
            if "running" in key or "num_batches" in key:
                assert torch.equal(state[key], value)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_randomisation_is_deterministic_and_independent_order_changes_one_layer():
    model = shapes_model()
    first = [m for _, m in randomize_layers(model, generator=torch.Generator().manual_seed(1))]
    again = [m for _, m in randomize_layers(model, generator=torch.Generator().manual_seed(1))]
    other = [m for _, m in randomize_layers(model, generator=torch.Generator().manual_seed(2))]
    assert all(torch.equal(p, q) for p, q in zip(first[-1].parameters(), again[-1].parameters(), strict=True))
    assert not torch.equal(first[-1][0].weight, other[-1][0].weight)
    independent = list(randomize_layers(model, order="independent", generator=torch.Generator().manual_seed(1)))
    for name, randomised in independent:
        differs = {k for k, v in randomised.state_dict().items() if not torch.equal(v, model.state_dict()[k])}
        assert differs and all(k.rsplit(".", 1)[0] == name for k in differs)
        # the same layer gets the same values in both orders
        cascade_copy = first[[n for n, _ in independent].index(name)]
        assert torch.equal(randomised.get_submodule(name).weight, cascade_copy.get_submodule(name).weight)


def test_randomisation_by_blocks_and_bad_arguments():
    model = shapes_model()
    ((name, randomised),) = list(randomize_layers(model, layers=["0"]))  # one named layer: one step
    assert name == "0" and not torch.equal(randomised[0].weight, model[0].weight)
    with pytest.raises(ValueError, match="order"):
        next(randomize_layers(model, order="bottom_up"))
    with pytest.raises(ValueError, match="no layer"):
        next(randomize_layers(model, layers=["2"]))  # a ReLU


def test_randomisation_layer_order_agrees_with_quantus():
    from quantus.helpers.model.pytorch_model import PyTorchModel

    model = shapes_model()
    with torch.random.fork_rng(devices=[]):  # Quantus reseeds the global RNG
        theirs = [name for name, _ in PyTorchModel(model).get_random_layer_generator(order="top_down")]
    assert [name for name, _ in randomize_layers(model)] == theirs
