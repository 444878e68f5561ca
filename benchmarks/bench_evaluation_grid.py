"""What notebook 04's budget leaves out, measured once outside it: a finer deletion/insertion grid, and N = 50.

1. The grid: deletion and insertion over the background (500 shapes images) and deletion to black (the first
   200) for 04's six maps, at 04's 8 steps and at 32; each map's mean with a 95% bootstrap interval, its paired
   difference from the vanilla gradient (t-interval, oriented so that + = better), and Spearman's correlation
   between the six maps' rankings at 8 and at 32 steps, and with mask AUC.
2. SmoothGrad's sample count: SmoothGrad-abs at 15% minus the vanilla gradient in relevance rank and mask AUC
   (paired t-intervals over the 500 images) at 04's N = 10 and at the paper's N = 50, for 04's noise seed and
   two others.

Same model (the ReLU shapes twin), images (``make_shapes(500, seed=400)``), maps and seeds as notebook 04; the
8-step rows and the N = 10 row of 04's seed repeat 04's printed numbers.

    python benchmarks/bench_evaluation_grid.py [--images 500] [--black 200] [--steps 8,32] [--seeds 1,11,21]

Prints tables only; about 20 minutes on one loaded CPU core.
"""

from __future__ import annotations

import argparse
import warnings

import torch

from smoothgrad_lib import load_model, saliency_map
from smoothgrad_lib.aggregates import AGGREGATES
from smoothgrad_lib.faithfulness import curve_auc, deletion_curve, insertion_curve
from smoothgrad_lib.methods import all_attributions
from smoothgrad_lib.metrics import mask_auc, rank_correlation, relevance_rank
from smoothgrad_lib.shapes import make_shapes
from smoothgrad_lib.stats import bootstrap_ci, paired_ci

FAITH_METHODS = [
    "vanilla",
    "smoothgrad_abs_0.15",
    "smoothgrad_vargrad_0.15",
    "grad_cam",
    "blurred_vanilla",
    "random",
]
BETTER = {"deletion AUC": -1, "insertion AUC": 1, "deletion AUC, black": -1}


def spearman(a: list[float], b: list[float]) -> float:
    return float(rank_correlation(torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64))[0])


def grid(relu, images, labels, masks, backgrounds, maps, black: int, steps_list: list[int]) -> None:
    print(f"1. deletion and insertion, {len(images)} images (to black: the first {black}), steps {steps_list}")
    faith = {}
    for steps in steps_list:
        chunk = 6 * (steps + 1)
        for name in FAITH_METHODS:
            m = maps[name]
            curve = deletion_curve(relu, images, m, labels, baseline=backgrounds, steps=steps, batch_size=chunk)
            faith[steps, "deletion AUC", name] = curve_auc(curve)
            curve = insertion_curve(relu, images, m, labels, baseline=backgrounds, steps=steps, batch_size=chunk)
            faith[steps, "insertion AUC", name] = curve_auc(curve)
            curve = deletion_curve(
                relu, images[:black], m[:black], labels[:black], baseline=0.0, steps=steps, batch_size=chunk
            )
            faith[steps, "deletion AUC, black", name] = curve_auc(curve)
    mask = [float(mask_auc(maps[name], masks).double().mean()) for name in FAITH_METHODS]
    for metric, sign in BETTER.items():
        print(f"\n{metric}: mean [95% bootstrap]; minus vanilla, oriented so that + = better [95% t-interval]")
        for name in FAITH_METHODS:
            cells = [
                "{:.3f} [{:.3f}, {:.3f}]".format(*bootstrap_ci(faith[s, metric, name]))
                + f"  {paired_ci(sign * faith[s, metric, name], sign * faith[s, metric, 'vanilla'])}"
                for s in steps_list
            ]
            print(f"  {name:24s} " + "   ".join(f"{s} steps: {c}" for s, c in zip(steps_list, cells, strict=True)))
        means = {s: [sign * float(faith[s, metric, name].mean()) for name in FAITH_METHODS] for s in steps_list}
        for s in steps_list:
            order = sorted(FAITH_METHODS, key=lambda name: -means[s][FAITH_METHODS.index(name)])
            print(f"  {s} steps, best first: {', '.join(order)}; Spearman with mask AUC {spearman(means[s], mask):.3f}")
        first, *rest = steps_list
        for s in rest:
            print(f"  Spearman of the rankings at {first} and {s} steps: {spearman(means[first], means[s]):.3f}")


def samples(relu, images, labels, masks, vanilla, seeds: list[int]) -> None:
    print("\n2. SmoothGrad-abs 15% minus vanilla, paired over the images [95% t-interval]")
    rank0, auc0 = relevance_rank(vanilla, masks).double(), mask_auc(vanilla, masks).double()
    for seed in seeds:
        for n in (10, 50):
            attr = all_attributions(
                relu, images, labels, gradcam_layer="14", seed=seed, batch_size=32,
                levels={0.15: ("abs",)}, n_samples=n, methods=["smoothgrad"],
            )  # fmt: skip
            m = saliency_map(attr["smoothgrad_abs_0.15"])
            print(
                f"  seed {seed:2d}, N = {n:2d}: relevance rank {paired_ci(relevance_rank(m, masks).double(), rank0)}; "
                f"mask AUC {paired_ci(mask_auc(m, masks).double(), auc0)}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--black", type=int, default=200)
    parser.add_argument("--steps", default="8,32")
    parser.add_argument("--seeds", default="1,11,21", help="all_attributions seeds (04 uses 1)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
    warnings.filterwarnings("ignore", message="Internal batch size cannot be less")
    relu = load_model("shapes-relu", device="cpu").model
    images, labels, masks, backgrounds = make_shapes(args.images, seed=400)  # 04's images
    settings = {"levels": {0.15: AGGREGATES, 0.05: ("abs",)}, "n_samples": 10, "ig_steps": 8}  # 04's SETTINGS
    attr = all_attributions(relu, images, labels, gradcam_layer="14", seed=1, batch_size=32, **settings)
    maps = {name: saliency_map(a) for name, a in attr.items()}
    grid(relu, images, labels, masks, backgrounds, maps, args.black, [int(s) for s in args.steps.split(",")])
    samples(relu, images, labels, masks, maps["vanilla"], [int(s) for s in args.seeds.split(",")])


if __name__ == "__main__":
    main()
