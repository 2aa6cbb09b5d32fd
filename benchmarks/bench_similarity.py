"""Cost of CKA over all layer pairs, against the forward passes it needs, as ratios in one run (CPU).

    uv run python benchmarks/bench_similarity.py [--images 512] [--tiny-images 32] [--batch 64]

For one model (every pair of its blocks) and for two models (within each and between
them), ``SimilarityStream`` (the engine of ``attnlab similarity``: block-output hooks,
float64 Gram matrices, one [S, S] unbiased-HSIC product per minibatch) against the plain
forward passes of the same models on the same batches. Target: at most 1.5x, with
``--tokens`` cls, mean and patches, on vit_micro_patch4_32 at 32 px (512 images) and
vit_tiny_patch16_224 (32 images); the logit lens (the final norm and head on every block)
is timed on top. Times are process CPU time on one thread unless ``--clock wall``.
"""
from __future__ import annotations

import argparse
from typing import List

import torch
from timing import add_clock_options, best_of, setup_clock

import attnlab  # noqa: F401  (registers the families)
from attnlab.models import create_model
from attnlab.studies.inputs import load_models
from attnlab.studies.similarity import TOKEN_CHOICES, SimilarityStream

TARGET = 1.5


def batches(n_images: int, batch: int, chans: int, size: int, seed: int = 0) -> List[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(min(batch, n_images - s), chans, size, size, generator=g) for s in range(0, n_images, batch)]


def bench(names: List[str], n_images: int, batch: int, clock) -> List[float]:
    torch.manual_seed(0)
    nets = [create_model(name).eval() for name in names]
    loaded = load_models(nets, [f"m{k}" for k in range(len(nets))])
    size, chans = nets[0].patch_embed.img_size[0], nets[0].patch_embed.proj.in_channels
    data = batches(n_images, batch, chans, size)

    def forward() -> None:
        with torch.inference_mode():
            for x in data:
                for net in nets:
                    net(x)

    def stream(tokens: str, logit_lens: bool) -> None:
        with SimilarityStream(loaded, tokens=tokens, device="cpu", logit_lens=logit_lens) as s:
            for x in data:
                s.update(x)
        s.frame()

    forward()  # warm up
    t_fwd = best_of(forward, clock)
    what = " + ".join(names)
    layers = sum(len(n.blocks) for n in nets)
    print(f"\n{what}: {n_images} images, batch {batch}, {layers} blocks -> {layers * layers} CKA pairs")
    print(f"  {'forward passes':36s} {n_images / t_fwd:8.1f} img/s")
    ratios = []
    for tokens in TOKEN_CHOICES:
        for lens in (False, True):
            t = best_of(lambda: stream(tokens, lens), clock)
            label = f"CKA, tokens={tokens}" + (" + logit lens" if lens else "")
            ratio = t / t_fwd
            if not lens:
                ratios.append(ratio)
            print(f"  {label:36s} {n_images / t:8.1f} img/s   {ratio:5.2f}x the forward passes"
                  + ("" if lens else f"   (target <= {TARGET}x: {'ok' if ratio <= TARGET else 'MISSED'})"))
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512, help="images for vit_micro_patch4_32")
    parser.add_argument("--tiny-images", type=int, default=32, help="images for vit_tiny_patch16_224")
    parser.add_argument("--batch", type=int, default=64)
    add_clock_options(parser)
    args = parser.parse_args()
    clock = setup_clock(args)
    worst = []
    for names, n in ((["vit_micro_patch4_32"], args.images),
                     (["vit_micro_patch4_32", "revit_micro_patch4_32"], args.images),
                     (["vit_tiny_patch16_224"], args.tiny_images),
                     (["vit_tiny_patch16_224", "revit_tiny_patch16_224"], args.tiny_images)):
        worst += bench(names, n, min(args.batch, n), clock)
    print(f"\nworst CKA ratio {max(worst):.2f}x the forward passes (target <= {TARGET}x)")


if __name__ == "__main__":
    main()
