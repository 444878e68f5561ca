"""smoothgrad_lib.noise.NormalStream: blocks of standard normal copies, independent of how they are taken."""

import torch

from smoothgrad_lib.noise import NOISE_BLOCK_COPIES, NormalStream


def stream(shape=(2, 3), seed=0):
    return NormalStream(torch.Size(shape), torch.Generator().manual_seed(seed), torch.device("cpu"), torch.float32)


def test_the_copies_are_the_generators_blocks_whatever_the_partition():
    count = 2 * NOISE_BLOCK_COPIES + 5  # three blocks, the last one partly used
    generator = torch.Generator().manual_seed(0)
    blocks = torch.cat([torch.randn((NOISE_BLOCK_COPIES, 2, 3), generator=generator) for _ in range(3)])
    for sizes in ([count], [1] * count, [7, NOISE_BLOCK_COPIES, 3, count - NOISE_BLOCK_COPIES - 10]):
        noise = stream()
        taken = torch.cat([noise.take(size) for size in sizes])
        assert taken.shape == (count, 2, 3) and torch.equal(taken, blocks[:count])


def test_a_block_holds_at_most_the_element_budget():
    big = NormalStream(torch.Size((3, 1024, 1024)), None, torch.device("cpu"), torch.float32)
    assert big.block == 1  # 3 M elements per copy: one copy per randn call
    assert stream().block == NOISE_BLOCK_COPIES


def test_antithetic_pairs_are_eps_then_minus_eps_from_the_same_draws():
    pairs = stream(seed=3).take_pairs(6, antithetic=True)
    draws = stream(seed=3).take(3)
    assert torch.equal(pairs[0::2], draws) and torch.equal(pairs[1::2], -draws)
    assert torch.equal(stream(seed=3).take_pairs(6, antithetic=False), stream(seed=3).take(6))
    assert not torch.equal(stream(seed=3).take(4), stream(seed=4).take(4))
