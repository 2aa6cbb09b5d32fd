"""Robustness-sweep throughput against plain evaluation of the same images (CPU), one run.

    uv run python benchmarks/bench_robustness.py [--model vit_micro_patch4_32] [--images 512]

Plain evaluation: the already-transformed, normalised images of every condition, forward
in batches. The sweep: ``evaluate_conditions`` doing the transforms, the batched forward
and the metrics. Target: the sweep processes >= 0.8x as many images per second.
Times are process CPU time on one thread unless ``--clock wall`` (see timing.py).
"""
from __future__ import annotations

import argparse

import torch
from timing import add_clock_options, best_of, setup_clock

import attnlab  # noqa: F401
from attnlab.data import normalize
from attnlab.models import create_model
from attnlab.spec import InputSpec
from attnlab.studies.robustness import evaluate_conditions, sweep_conditions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_micro_patch4_32")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    add_clock_options(parser)
    args = parser.parse_args()
    clock = setup_clock(args)
    model = create_model(args.model, in_chans=1).eval()
    size = model.patch_embed.img_size
    spec = InputSpec(size=size, channels=1, mean=(0.286,), std=(0.353,))
    g = torch.Generator().manual_seed(0)
    batches = [(torch.rand(args.batch, 1, *size, generator=g), torch.randint(0, 10, (args.batch,), generator=g))
               for _ in range(args.images // args.batch)]
    conds = sweep_conditions([0, 2, 4, 8, 16], [0.5, 0.75, 1.0, 1.25, 1.5], "h", "black", size)
    views = [normalize(torch.cat([x] + [c.apply(x, g) for c in conds]), spec) for x, _ in batches]
    n_total = sum(v.shape[0] for v in views)

    def plain():
        with torch.inference_mode():
            for v in views:
                for chunk in v.split(args.batch):
                    model(chunk)

    def sweep():
        evaluate_conditions(model, spec, batches, conds, max_batch=args.batch)

    plain()
    t_plain, t_sweep = best_of(plain, clock), best_of(sweep, clock)
    print(f"{args.model}: {args.images} images x {len(conds) + 1} views = {n_total} forward images, "
          f"{torch.get_num_threads()} threads")
    print(f"  plain evaluation of the transformed images  {n_total / t_plain:8.1f} img/s")
    print(f"  robustness sweep (transforms + metrics)     {n_total / t_sweep:8.1f} img/s   "
          f"ratio {t_plain / t_sweep:.2f}x")


if __name__ == "__main__":
    main()
