"""smoothgrad_lib.noise: NormalStream's blocks of standard normal copies, independent of how they are taken; the
devices noise is drawn on and handed out on."""

from types import SimpleNamespace

import pytest
import torch

from smoothgrad_lib.noise import (
    NOISE_BLOCK_COPIES,
    NormalStream,
    check_generator,
    gaussian_noise,
    noise_generator,
    random_draws,
    seeded_generator,
    uniform_noise,
)


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


def test_cpu_generators_draw_todays_cpu_values():
    x = torch.zeros(2, 3, 4)
    assert torch.equal(uniform_noise(x, seeded_generator(1)), torch.rand(2, 3, 4, generator=seeded_generator(1)))
    assert torch.equal(gaussian_noise(x, seeded_generator(1)), torch.randn(2, 3, 4, generator=seeded_generator(1)))
    drawn = random_draws(torch.randn, (5, 2), seeded_generator(2), torch.device("cpu"), torch.float64)
    assert drawn.dtype == torch.float64 and torch.equal(
        drawn, torch.randn(5, 2, generator=seeded_generator(2), dtype=torch.float64)
    )


def test_a_cpu_generator_serves_another_device_and_advances_as_on_the_cpu():
    """x on PyTorch's "meta" device stands in for a GPU: the draws land there, and the generator's state after them
    is the state after the same draws on the CPU (so the values moved are the CPU's)."""
    meta, cpu = torch.device("meta"), torch.device("cpu")
    moved, here = seeded_generator(3), seeded_generator(3)
    shape = torch.Size((2, 3))
    far, near = NormalStream(shape, moved, meta, torch.float32), NormalStream(shape, here, cpu, torch.float32)
    taken = far.take(NOISE_BLOCK_COPIES + 1)  # two blocks
    near.take(NOISE_BLOCK_COPIES + 1)
    assert taken.device == meta and taken.shape == (NOISE_BLOCK_COPIES + 1, 2, 3)
    assert torch.equal(moved.get_state(), here.get_state())
    u = uniform_noise(torch.zeros(4, device=meta), moved)
    assert u.device == meta and not torch.equal(moved.get_state(), here.get_state())
    uniform_noise(torch.zeros(4), here)
    assert torch.equal(moved.get_state(), here.get_state())


def test_a_generator_on_an_accelerator_is_refused_for_x_elsewhere():
    """A CUDA generator cannot be made without a GPU; ``check_generator`` reads only its ``.device``."""
    on_cuda = SimpleNamespace(device=torch.device("cuda", 0))
    message = r"generator is on cuda:0 but x is on cpu: use a generator on x's device .* or on the CPU"
    with pytest.raises(ValueError, match=message):
        check_generator(on_cuda, torch.zeros(2))
    with pytest.raises(ValueError, match=message):
        random_draws(torch.randn, (2,), on_cuda, torch.device("cpu"), torch.float32)
    with pytest.raises(ValueError, match="generator is on cuda:0 but x is on mps"):
        check_generator(on_cuda, torch.device("mps"))
    check_generator(on_cuda, torch.device("cuda", 1))  # same device type: its own concern
    check_generator(seeded_generator(0), torch.zeros(2, device="meta"))
    check_generator(None, torch.zeros(2, device="meta"))


def test_noise_generator_is_on_x_device_or_the_cpu_and_refuses_other_places():
    x = torch.zeros(2, device="meta")
    assert noise_generator(4, x, "cpu").device == torch.device("cpu")
    assert torch.equal(noise_generator(4, torch.zeros(2)).get_state(), seeded_generator(4).get_state())
    with pytest.raises(ValueError, match="noise_device must be 'input' .* or 'cpu' .*, got 'cuda'"):
        noise_generator(4, x, "cuda")
