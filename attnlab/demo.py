"""The main job on the embedded default, as far as attnlab goes today.

Builds the four families at the CPU-friendly ``micro`` size for Fashion-MNIST-shaped
input (1 x 32 x 32, 10 classes), writes a self-describing checkpoint for each, reloads
it from the file alone and checks the reloaded model computes the same outputs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from .checkpoint import load_model, save_checkpoint
from .inspect import describe
from .models import create_model
from .spec import InputSpec

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DEMO_MODELS = ["vit_micro_patch4_32", "revit_micro_patch4_32", "vit_cb_micro_patch4_32", "revit_cb_micro_patch4_32"]


def run_demo(out: Path, seed: int = 0, log: Callable[[str], None] = print) -> List[Dict]:
    """Write one checkpoint per family into ``out/checkpoints`` and verify each reloads exactly."""
    torch.manual_seed(seed)
    spec = InputSpec(size=(32, 32), channels=1, mean=(0.2860,), std=(0.3530,))
    x = torch.randn(4, 1, 32, 32)
    summaries = []
    for name in DEMO_MODELS:
        model = create_model(name, in_chans=1, num_classes=len(FASHION_MNIST_CLASSES)).eval()
        path = save_checkpoint(model, Path(out) / "checkpoints" / f"{name}.pt", classes=FASHION_MNIST_CLASSES,
                               input_spec=spec, provenance={"weights": "random initialisation", "seed": seed})
        loaded, loaded_spec = load_model(path)
        with torch.no_grad():
            same = torch.equal(model(x), loaded(x))
        if not same:
            raise RuntimeError(f"{path} did not reload to the same model")
        summary = describe(loaded, loaded_spec)
        summaries.append(summary)
        log(f"{name:26s} {summary['num_params']:>9,} params  a={summary['alpha'] if summary['alpha'] is not None else '-':<5}"
            f"  -> {path}  (reloaded: outputs identical)")
    return summaries
