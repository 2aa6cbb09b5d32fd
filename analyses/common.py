"""What the analysis scripts share: where the trained checkpoints are and where figures go.

Checkpoints come from ``analyses/train_models.py`` (``runs/<dataset>/<model>/best.pt``);
the three main Fashion-MNIST checkpoints are also committed in ``checkpoints/`` so every
figure can be regenerated without training. Each script writes into ``figures/<name>/``.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "figures"
RUNS = ROOT / "runs"
COMMITTED = ROOT / "checkpoints"
MAIN_MODELS = {"ViT": "vit_micro_patch4_32", "ReViT": "revit_micro_patch4_32", "ViT+CB": "vit_cb_micro_patch4_32"}


def checkpoint(model: str, dataset: str = "fashion-mnist", run: Optional[str] = None) -> Path:
    """The best checkpoint of a trained model: runs/ first, then the committed copy."""
    name = run or model
    for path in (RUNS / dataset / name / "best.pt", COMMITTED / dataset / f"{name}.pt"):
        if path.exists():
            return path
    raise SystemExit(f"no checkpoint for {name} on {dataset}: run `uv run python analyses/train_models.py "
                     f"--dataset {dataset}` first")


def main_checkpoints(dataset: str = "fashion-mnist", labels: Optional[List[str]] = None) -> Dict[str, str]:
    return {label: str(checkpoint(model, dataset)) for label, model in MAIN_MODELS.items()
            if labels is None or label in labels}


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist or cifar10 (runs/<dataset>/)")
    p.add_argument("--data-dir", default=None, help="dataset folder (cifar10: ../shared/data/cifar10-jpeg)")
    p.add_argument("--images", type=int, default=1000, help="test images to analyse")
    return p


def dataset_args(args) -> dict:
    """load_dataset arguments: the CIFAR-10 JPEG folder is an image folder."""
    if args.dataset == "cifar10" and args.data_dir and not (Path(args.data_dir) / "cifar-10-batches-py").exists():
        return {"dataset": "imagefolder", "data_dir": args.data_dir}
    return {"dataset": args.dataset, "data_dir": args.data_dir}


def out_dir(name: str, dataset: str) -> Path:
    suffix = "" if dataset == "fashion-mnist" else f"-{dataset}"
    return FIGURES / f"{name}{suffix}"
