"""Attention-analysis throughput on the families beyond timm's ViT, as ratios measured in one run (CPU).

    uv run python benchmarks/bench_families.py [--images 16] [--batch 8] [--clock wall --threads 2]

For ``swin_tiny_patch4_window7_224`` (windowed attention: distances and entropy from each
window's geometry), ``eva02_tiny_patch14_224`` (EVA attention with RoPE) at 224 px, and a
Hugging Face ``ViTForImageClassification`` (a small config saved with ``save_pretrained`` and
loaded from its folder, as ``attnlab.load_model(DIR)`` does): the throughput of
``analyse_attention`` with the globality metrics and with the entropy metrics against the plain
evaluation forward pass of the same model with attention computed explicitly (timm's unfused
path, ``fused_attn = False``; Hugging Face's eager attention). Target: >= 0.8x.

Random weights and random images: the work does not depend on them. Times are process CPU
time on one thread unless ``--clock wall`` (see timing.py).
"""
from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path
from typing import Callable, List, Tuple

import torch
from timing import add_clock_options, best_of, setup_clock
from torch import nn

import attnlab
from attnlab.studies.attention import ENTROPY_METRICS, GLOBALITY_METRICS
from attnlab.studies.stream import analyse_attention

TIMM_MODELS = ("swin_tiny_patch4_window7_224", "eva02_tiny_patch14_224")


def explicit_attention(model: nn.Module) -> nn.Module:
    """A copy of a timm model on its hand-written (unfused) attention path."""
    plain = copy.deepcopy(model)
    for module in plain.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    return plain


def hf_models(folder: Path) -> Tuple[nn.Module, nn.Module]:
    """A small Hugging Face ViT saved to ``folder``: as attnlab loads it, and with eager attention."""
    import transformers

    from attnlab.models.hf import HFVisionModel

    config = transformers.ViTConfig(image_size=224, patch_size=16, hidden_size=192, num_hidden_layers=6,
                                    num_attention_heads=3, intermediate_size=768, num_labels=10)
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    analysed, _ = attnlab.load_model(str(folder))
    eager = transformers.ViTForImageClassification.from_pretrained(folder, attn_implementation="eager")
    return analysed.eval(), HFVisionModel(eager).eval()


def bench(name: str, model: nn.Module, plain: nn.Module, data: List[torch.Tensor],
          clock: Callable[[], float]) -> None:
    def forward() -> None:
        with torch.inference_mode():
            for x in data:
                plain(x)

    forward()  # warm up
    t_fwd = best_of(forward, clock)
    rows = [("forward, explicit attention", t_fwd)]
    for label, metrics in [("globality metrics", GLOBALITY_METRICS), ("entropy metrics", ENTROPY_METRICS)]:
        t = best_of(lambda: analyse_attention(model, data, label="m", checkpoint="-", metrics=metrics), clock)
        rows.append((f"analyse_attention, {label}", t))
    n = sum(len(x) for x in data)
    print(f"\n{name}: {n} images of {data[0].shape[-1]} px, batch {len(data[0])}, {torch.get_num_threads()} threads")
    for label, t in rows:
        print(f"  {label:42s} {n / t:8.2f} img/s   ratio to forward {t_fwd / t:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--no-hf", action="store_true", help="skip the Hugging Face model")
    add_clock_options(parser)
    args = parser.parse_args()
    clock = setup_clock(args)
    g = torch.Generator().manual_seed(0)
    data = [torch.randn(min(args.batch, args.images - s), 3, 224, 224, generator=g)
            for s in range(0, args.images, args.batch)]
    for name in TIMM_MODELS:
        torch.manual_seed(0)
        model = attnlab.create_model(name, num_classes=10).eval()
        bench(name, model, explicit_attention(model), data, clock)
    if not args.no_hf:
        with tempfile.TemporaryDirectory() as folder:
            model, eager = hf_models(Path(folder) / "vit")
            bench("Hugging Face ViTForImageClassification (6 layers, 192 wide)", model, eager, data, clock)


if __name__ == "__main__":
    main()
