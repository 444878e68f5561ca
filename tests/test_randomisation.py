"""smoothgrad_lib.randomisation: the randomised copies (top down, independent, by block) and the cascade test."""

import pytest
import torch

from smoothgrad_lib.methods import all_attributions
from smoothgrad_lib.randomisation import SIMILARITIES, cascade_similarity, randomize_layers


def test_cascading_randomisation_changes_the_top_layers_only_and_never_the_model(relu_twin):
    model = relu_twin.model
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


def test_randomisation_is_deterministic_and_independent_order_changes_one_layer(relu_twin):
    model = relu_twin.model
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


def test_randomisation_by_blocks_and_bad_arguments(relu_twin):
    model = relu_twin.model
    ((name, randomised),) = list(randomize_layers(model, layers=["0"]))  # one named layer: one step
    assert name == "0" and not torch.equal(randomised[0].weight, model[0].weight)
    with pytest.raises(ValueError, match="order"):
        next(randomize_layers(model, order="bottom_up"))
    with pytest.raises(ValueError, match="no layer"):
        next(randomize_layers(model, layers=["2"]))  # a ReLU


def test_randomisation_layer_order_agrees_with_quantus(relu_twin):
    from quantus.helpers.model.pytorch_model import PyTorchModel

    model = relu_twin.model
    with torch.random.fork_rng(devices=[]):  # Quantus reseeds the global RNG
        theirs = [name for name, _ in PyTorchModel(model).get_random_layer_generator(order="top_down")]
    assert [name for name, _ in randomize_layers(model)] == theirs


def test_cascade_similarity_scores_each_randomised_network_against_the_trained_maps(relu_twin):
    model = relu_twin.model
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    labels = model(x).argmax(1)

    def explain(network):
        return all_attributions(
            network, x, labels, methods=("vanilla", "gradient_x_input", "random"), gradcam_layer="14", seed=1
        )

    trained = explain(model)
    cascade = cascade_similarity(model, trained, explain, generator=torch.Generator().manual_seed(2))
    layers = [name for name, _ in randomize_layers(model, generator=torch.Generator().manual_seed(2))]
    assert cascade.steps == ["trained", *layers]
    assert list(cascade.similarity) == list(SIMILARITIES) and list(cascade.constant) == list(SIMILARITIES[:2])
    for per in cascade.similarity.values():
        assert list(per) == list(trained)
        for values in per.values():
            assert values.shape == (3, len(cascade.steps)) and values.dtype == torch.float64
            torch.testing.assert_close(values[:, 0], torch.ones(3, dtype=torch.float64))  # trained vs itself
        torch.testing.assert_close(per["random"], torch.ones_like(per["random"]))  # the random map ignores the net
    # The last step's scores are those of the fully randomised network's attributions, which it returns.
    last = explain(list(randomize_layers(model, generator=torch.Generator().manual_seed(2)))[-1][1])
    for method, a in last.items():
        torch.testing.assert_close(cascade.last[method], a)
    # Vanilla gradients are signed: the signed and the |a| Spearman differ; the random map is >= 0: they agree.
    assert not torch.equal(cascade.similarity["Spearman a"]["vanilla"], cascade.similarity["Spearman |a|"]["vanilla"])
    assert torch.equal(cascade.similarity["Spearman a"]["random"], cascade.similarity["Spearman |a|"]["random"])


def test_cascade_similarity_counts_a_constant_map_as_zero():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 2)).eval()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    trained = {"flat": torch.ones(2, 3, 8, 8), "input": x.clone()}  # "flat" is constant: no ranking
    cascade = cascade_similarity(model, trained, lambda network: {"flat": torch.ones(2, 3, 8, 8), "input": x + 1})
    for score in SIMILARITIES[:2]:
        assert cascade.constant[score] == {"flat": 4, "input": 0}  # 2 images x (trained, one layer)
        assert torch.equal(cascade.similarity[score]["flat"], torch.zeros(2, 2, dtype=torch.float64))
        torch.testing.assert_close(cascade.similarity[score]["input"], torch.ones(2, 2, dtype=torch.float64))
