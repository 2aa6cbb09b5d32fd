"""Attention-analysis throughput and memory, as ratios measured in one run (CPU).

    uv run python benchmarks/bench_analysis.py [--models vit_micro_patch4_32,...] [--images 512]

1. Throughput of ``analyse_attention`` (the metrics of ``attnlab globality`` and of
   ``attnlab entropy``) against the plain evaluation forward pass of the same model with
   attention computed explicitly (timm's unfused path): target >= 0.8x.
2. Against timm's ``AttentionExtract`` (with the model built unfused, as it requires)
   followed by the same metrics computed map by map with attnlab's public functions.
3. Peak memory (max RSS of a fresh process) analysing 4,096 images vs 256: target <= 1.10x.

Times are process CPU time on one thread unless ``--clock wall`` (see timing.py).
"""
from __future__ import annotations

import argparse
import copy
import subprocess
import sys

import torch
from timing import add_clock_options, best_of, setup_clock

import attnlab  # noqa: F401  (registers the families)
from attnlab.studies.stream import analyse_attention
from attnlab.layout import TokenLayout
from attnlab.metrics import (globality_curve, mean_attention_distance, nonlocality,
                             prefix_mass)
from attnlab.models import create_model
from attnlab.studies.attention import ENTROPY_METRICS, GLOBALITY_METRICS


def batches(n_images: int, batch: int, chans: int, size: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    for start in range(0, n_images, batch):
        yield torch.randn(min(batch, n_images - start), chans, size, size, generator=g)


def unfused(model):
    m = copy.deepcopy(model)
    for blk in m.blocks:
        blk.attn.fused_attn = False
    return m


def bench_model(name: str, n_images: int, batch: int, clock) -> None:
    kwargs = {"in_chans": 1} if "patch4_32" in name else {}
    model = create_model(name, **kwargs).eval()
    size = model.patch_embed.img_size[0]
    chans = model.patch_embed.proj.in_channels
    data = list(batches(n_images, batch, chans, size))
    plain = unfused(model)

    def forward():
        with torch.inference_mode():
            for x in data:
                plain(x)

    forward()  # warm up
    t_fwd = best_of(forward, clock)
    rows = [("forward, explicit attention", t_fwd)]
    for label, metrics in [("globality metrics", GLOBALITY_METRICS), ("entropy metrics", ENTROPY_METRICS)]:
        t = best_of(lambda: analyse_attention(model, data, label="m", checkpoint="-", metrics=metrics), clock)
        rows.append((f"analyse_attention, {label}", t))
    if "revit" in name:  # the default measures two maps per layer; like for like is the applied one alone
        for label, metrics in [("globality", GLOBALITY_METRICS), ("entropy", ENTROPY_METRICS)]:
            t = best_of(lambda: analyse_attention(model, data, label="m", checkpoint="-", metrics=metrics,
                                                  own=False), clock)
            rows.append((f"  {label}, applied attention only", t))

    from timm.utils import AttentionExtract

    extract = AttentionExtract(plain, method="fx" if "revit" not in name else "hook")
    layout = TokenLayout.from_model(model)

    def timm_then_metrics():
        with torch.inference_mode():
            for x in data:
                maps = extract(x)
                if not maps:
                    raise RuntimeError("AttentionExtract returned no maps")
                for a in maps.values():
                    mean_attention_distance(a, layout=layout)
                    mean_attention_distance(a, layout=layout, renormalize=False)
                    nonlocality(a, layout)
                    globality_curve(a, layout, [0, 1, 2, 3, 4, 6, 8])
                    prefix_mass(a, layout)

    if "revit" in name:
        t_timm = None  # timm's extractor cannot see ReViT's residual attention modules
    else:
        t_timm = best_of(timm_then_metrics, clock)
    print(f"\n{name}: {n_images} images, batch {batch}, {torch.get_num_threads()} threads")
    for label, t in rows:
        print(f"  {label:42s} {n_images / t:8.1f} img/s   ratio to forward {t_fwd / t:5.2f}x")
    if t_timm is not None:
        t_glob = rows[1][1]  # globality metrics
        print(f"  {'timm AttentionExtract + same metrics':42s} {n_images / t_timm:8.1f} img/s   "
              f"attnlab is {t_timm / t_glob:5.2f}x faster")


def peak_rss_mb(n_images: int, name: str) -> float:
    code = (
        "import resource, torch, attnlab\n"
        "from attnlab.studies.stream import analyse_attention\n"
        "from attnlab.models import create_model\n"
        f"m = create_model({name!r}, in_chans=1).eval()\n"
        "g = torch.Generator().manual_seed(0)\n"
        f"data = (torch.randn(64, 1, 32, 32, generator=g) for _ in range({n_images} // 64))\n"
        "analyse_attention(m, data, label='m', checkpoint='-')\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="vit_micro_patch4_32,revit_micro_patch4_32,vit_tiny_patch16_224")
    parser.add_argument("--images", type=int, default=1024, help="images for the micro models (ViT-Ti at 224 gets an eighth)")
    parser.add_argument("--batch", type=int, default=64)
    add_clock_options(parser)
    args = parser.parse_args()
    clock = setup_clock(args)
    for name in args.models.split(","):
        n = args.images if "patch4_32" in name else max(args.images // 8, args.batch)
        bench_model(name, n, args.batch, clock)
    small, large = peak_rss_mb(256, "revit_micro_patch4_32"), peak_rss_mb(4096, "revit_micro_patch4_32")
    print(f"\npeak memory (max RSS), revit_micro_patch4_32, all metrics: 256 images {small:.0f} MB, "
          f"4096 images {large:.0f} MB, ratio {large / small:.3f}x")


if __name__ == "__main__":
    main()
