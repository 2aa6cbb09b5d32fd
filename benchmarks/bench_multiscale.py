"""The multiscale ReViT families against their bases, as ratios measured in one run (CPU).

(a) per-step training time (forward + backward + AdamW) of ReSwin / Swin and ReMViTv2 / MViTv2
    at the same (micro, 32 px) size, the base being the same model with residual=False, i.e.
    timm's own Swin / MViTv2: target <= 1.25x;
(b) analysis throughput through the AttentionAnalyser, with the globality metrics (what
    ``attnlab globality`` measures) and with the entropy metrics (``attnlab entropy``), against
    the plain forward pass of the same model: target >= 0.8x, as for the other families.

Interleaved rounds, median, one thread, process CPU time by default (see timing.py).
Run: ``.venv/bin/python benchmarks/bench_multiscale.py``.
"""
from __future__ import annotations

import argparse
import statistics

import torch
from torch import nn
from timing import add_clock_options, setup_clock

import attnlab
from attnlab.studies.attention import ENTROPY_METRICS, GLOBALITY_METRICS
from attnlab.studies.stream import AttentionAnalyser

SIZES = {  # name, input size, channels
    "micro": {"ReSwin / Swin": ("reswin_micro_patch2_window4_32", 32, 1), "ReMViTv2 / MViTv2": ("remvitv2_micro_32", 32, 1)},
    "tiny": {"ReSwin / Swin": ("reswin_tiny_patch4_window7_224", 224, 3), "ReMViTv2 / MViTv2": ("remvitv2_tiny", 224, 3)},
}


def step_time(name: str, size: int, chans: int, residual: bool, batch: int, steps: int, clock) -> float:  # noqa: ANN001
    torch.manual_seed(0)
    model = attnlab.create_model(name, residual=residual, in_chans=chans, num_classes=10).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(batch, chans, size, size), torch.randint(0, 10, (batch,))
    times = []
    for s in range(steps + 1):
        t = clock()
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if s:
            times.append(clock() - t)
    return statistics.median(times)


def analysis_ratio(name: str, size: int, chans: int, batch: int, batches: int, clock,  # noqa: ANN001
                   metrics=GLOBALITY_METRICS) -> float:  # noqa: ANN001
    torch.manual_seed(0)
    model = attnlab.create_model(name, in_chans=chans, num_classes=10).eval()
    xs = [torch.randn(batch, chans, size, size) for _ in range(batches)]
    with torch.inference_mode():
        model(xs[0])
        t = clock()
        for x in xs:
            model(x)
        forward = clock() - t
    analyser = AttentionAnalyser(model, label=name, checkpoint="-", metrics=metrics, device="cpu")
    with analyser:
        analyser.update(xs[0])
        t = clock()
        for x in xs:
            analyser.update(x)
        analysis = clock() - t
    return forward / analysis


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", choices=sorted(SIZES), default="micro", help="micro (32 px) or tiny (224 px)")
    add_clock_options(ap)
    args = ap.parse_args()
    clock = setup_clock(args)
    print(f"{args.size} models, batch {args.batch_size}")
    print(f"{'pair':<20} {'step ratio':>10} {'globality / forward':>20} {'entropy / forward':>18}")
    for label, (name, size, chans) in SIZES[args.size].items():
        ratios = []
        for _ in range(args.rounds):  # interleaved: residual, base, residual, base, ...
            ratios.append(step_time(name, size, chans, True, args.batch_size, args.steps, clock)
                          / step_time(name, size, chans, False, args.batch_size, args.steps, clock))
        shares = [statistics.median(analysis_ratio(name, size, chans, args.batch_size, 4, clock, metrics)
                                    for _ in range(args.rounds)) for metrics in (GLOBALITY_METRICS, ENTROPY_METRICS)]
        print(f"{label:<20} {statistics.median(ratios):>9.2f}x {shares[0]:>19.2f}x {shares[1]:>17.2f}x")


if __name__ == "__main__":
    main()
