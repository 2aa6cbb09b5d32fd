"""Cost of ``chefer`` (gradient-weighted attention rollout) against one forward + backward pass, one run.

    uv run python benchmarks/bench_attribution.py [--device cpu|cuda] [--clock cpu|wall]

For each case (vit_micro_patch4_32 at 32 px on 16 images; vit_tiny_patch16_224 at 224 px
on 4 images): the baseline is one forward pass of the batch and one backward pass of its
summed target logits to the weights (what a training step costs, without the optimiser);
``chefer`` is the whole method as ``explain`` runs it (attention captured with its graph,
one backward pass to the attention, the relevance products, the upsampled map).
Target: chefer <= 3x the baseline. Times are process CPU time on one thread unless
``--clock wall`` (see timing.py); on CUDA the wall clock, synchronised.
"""
from __future__ import annotations

import argparse
import time

import torch
from timing import add_clock_options, best_of, setup_clock

import attnlab  # noqa: F401
from attnlab.models import create_model
from attnlab.studies.attribution import compute_cam

CASES = (("vit_micro_patch4_32", 32, 16), ("vit_tiny_patch16_224", 224, 4))
TARGET = 3.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    add_clock_options(parser)
    args = parser.parse_args()
    device = torch.device(args.device)
    clock = setup_clock(args)
    if device.type == "cuda":
        def clock() -> float:  # noqa: F811  (asynchronous kernels: wait for them)
            torch.cuda.synchronize()
            return time.perf_counter()
    worst = 0.0
    for name, size, batch in CASES:
        torch.manual_seed(0)
        model = create_model(name).to(device).eval()
        x = torch.randn(batch, 3, size, size, device=device)
        targets = torch.randint(0, model.num_classes, (batch,)).tolist()
        t = torch.as_tensor(targets, device=device)

        def forward_backward() -> None:
            model.zero_grad(set_to_none=True)
            model(x).gather(1, t[:, None]).sum().backward()

        def chefer() -> None:
            compute_cam(model, x, "chefer", targets, batch_size=batch)

        forward_backward(), chefer()   # warm-up
        t_base = best_of(forward_backward, clock, args.repeats)
        t_chefer = best_of(chefer, clock, args.repeats)
        ratio = t_chefer / t_base
        worst = max(worst, ratio)
        print(f"{name} at {size} px, {batch} images on {device}:")
        print(f"  forward + backward  {1000 * t_base:9.1f} ms")
        print(f"  chefer              {1000 * t_chefer:9.1f} ms   ratio {ratio:.2f}x (target <= {TARGET:g}x)")
    print(f"worst ratio {worst:.2f}x: {'within' if worst <= TARGET else 'OVER'} the target")


if __name__ == "__main__":
    main()
