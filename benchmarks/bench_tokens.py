"""Analysis at many tokens: DINOv2-S at 518 px (1,370 tokens), where every attention map is large.

``vit_small_patch14_dinov2`` (random weights) on ``--images`` random 518 px inputs, batch
``--batch``, globality metrics:

    forward                 the plain forward pass (timm's fused attention)
    forward, explicit       the same with attention computed explicitly, as the analysis must
    analysis                ``AttentionAnalyser`` as the studies run it: a transient sink, so each
                            layer writes its maps into one kept storage (``capture.hooks``)
    analysis, fresh maps    the same with every map allocated afresh (``transient=False``)

Best of ``--repeats`` (process CPU time on one thread by default; ``--clock wall --threads N``).
Run: ``.venv/bin/python benchmarks/bench_tokens.py``.
"""
from __future__ import annotations

import argparse
from functools import partial

import torch
from timing import add_clock_options, attention_fused, best_of, setup_clock

import attnlab
import attnlab.studies.stream as stream
from attnlab.studies import GLOBALITY_METRICS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    add_clock_options(ap)
    args = ap.parse_args()
    clock = setup_clock(args)
    torch.manual_seed(0)
    model = attnlab.create_model("vit_small_patch14_dinov2", img_size=518, num_classes=10).eval()
    xs = torch.randn(args.images, 3, 518, 518).split(args.batch)

    def forward(fused: bool = True) -> None:
        with torch.inference_mode(), attention_fused(model, fused):
            for x in xs:
                model(x)

    def analysis(transient: bool = True) -> None:
        hooks = stream.hooks
        if not transient:
            stream.hooks = lambda *a, **k: hooks(*a, **{**k, "transient": False})  # fresh maps
        try:
            with stream.AttentionAnalyser(model, label="dinov2", checkpoint="-", metrics=GLOBALITY_METRICS) as a:
                for x in xs:
                    a.update(x)
        finally:
            stream.hooks = hooks

    forward()
    base = best_of(forward, clock, args.repeats)
    print(f"vit_small_patch14_dinov2, 518 px (1,370 tokens), {args.images} images, batch {args.batch}")
    for name, fn in (("forward", forward), ("forward, explicit attention", partial(forward, False)),
                     ("analysis", analysis), ("analysis, fresh maps", partial(analysis, False))):
        t = base if fn is forward else best_of(fn, clock, args.repeats)
        print(f"  {name:<28} {args.images / t:7.3f} img/s   {base / t:5.2f}x the forward pass")


if __name__ == "__main__":
    main()
