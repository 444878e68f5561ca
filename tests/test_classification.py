"""smoothgrad_lib.classification on a model whose ranks are known: the target's rank among noisy copies, accuracy."""

import pytest
import torch

from smoothgrad_lib.classification import accuracy, noisy_ranks
from smoothgrad_lib.noise import seeded_generator as generator


def test_noisy_ranks_and_accuracy(biased_model):
    model = biased_model(10.0)
    x = torch.rand(2, 1, 8, 8, generator=generator(0)) + 0.5
    ranks = noisy_ranks(model, x, 2, n_samples=5, noise_level=0.5, generator=generator(1))
    assert ranks.shape == (2, 5) and (ranks == 0).all()
    assert (noisy_ranks(model, x, [0, 1], n_samples=3, noise_level=0.0) == torch.tensor([[1], [2]])).all()
    # A mean-zero image of range 2 plus noise: class 0 beats class 1 in about half the copies, putting class 1 third.
    centred = torch.tensor([-1.0, 1.0]).repeat(32).reshape(1, 1, 8, 8)
    below = noisy_ranks(model, centred, 1, n_samples=2000, noise_level=0.3, generator=generator(2))
    assert 0.45 < float((below == 2).float().mean()) < 0.55 and set(below.unique().tolist()) == {1, 2}
    again = noisy_ranks(model, x, 0, n_samples=5, noise_level=0.5, generator=generator(1))
    assert torch.equal(
        again, noisy_ranks(model, x, 0, n_samples=5, noise_level=0.5, generator=generator(1), batch_size=3)
    )
    assert accuracy(model, x, torch.tensor([2, 2])) == 1.0
    assert accuracy(model, x, torch.tensor([2, 0]), noise_level=0.1, n_samples=4, generator=generator(0)) == 0.5
    with pytest.raises(ValueError, match="n_samples"):
        noisy_ranks(model, x, 0, n_samples=0, noise_level=0.1)
