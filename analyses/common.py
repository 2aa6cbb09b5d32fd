"""What the analysis scripts share: where the trained checkpoints are, the runs over seeds, and
where figures go.

Checkpoints come from ``analyses/train_models.py`` (``runs/<dataset>/<name>/seed<k>/best.pt``)
and are committed as ``checkpoints/<dataset>/<name>/seed<k>.pt`` (``train_models.py
--collect``, with the run's ``metrics.csv`` and ``run.json`` beside them), so every figure can
be regenerated without training. Each script writes into ``figures/<name>/``.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "figures"
RUNS = ROOT / "runs"
COMMITTED = ROOT / "checkpoints"
MAIN_MODELS = {"ViT": "vit_micro_patch4_32", "ReViT": "revit_micro_patch4_32", "ViT+CB": "vit_cb_micro_patch4_32"}


SEEDS = (0, 1, 2)
SEED_FILE = re.compile(r"seed(\d+)\.pt")
#: The comparisons the readings make, each as a paired difference over seeds (first minus second).
COMPARISONS: Tuple[Tuple[str, str], ...] = (("ReViT", "ViT"), ("ViT+CB", "ViT"))


def run_dir(name: str, dataset: str, seed: int) -> Path:
    return RUNS / dataset / name / f"seed{seed}"


def finished(run: Path) -> bool:
    """A run in runs/ that trained to its last epoch (an interrupted one is not read)."""
    import json

    info = run / "resume.json"
    return (run / "best.pt").exists() and info.exists() and bool(json.loads(info.read_text()).get("finished"))


def committed(name: str, dataset: str, seed: int) -> Path:
    return COMMITTED / dataset / name / f"seed{seed}.pt"


def checkpoint(model: str, dataset: str = "fashion-mnist", run: Optional[str] = None, seed: int = 0) -> Path:
    """The best checkpoint of one trained run: runs/ first, then the committed copy."""
    name = run or model
    if finished(run_dir(name, dataset, seed)):
        return run_dir(name, dataset, seed) / "best.pt"
    if committed(name, dataset, seed).exists():
        return committed(name, dataset, seed)
    raise SystemExit(f"no checkpoint for {name} seed {seed} on {dataset}: run `uv run python analyses/train_models.py "
                     f"--dataset {dataset}` first")


def metrics_csv(name: str, dataset: str, seed: int = 0) -> Path:
    """The metrics.csv of one run: in runs/, else beside the committed checkpoint."""
    for path in (run_dir(name, dataset, seed) / "metrics.csv", committed(name, dataset, seed).with_suffix(".metrics.csv")):
        if path.exists():
            return path
    raise SystemExit(f"no metrics.csv for {name} seed {seed} on {dataset}")


def seeds_of(name: str, dataset: str) -> List[int]:
    """The seeds a run name has a checkpoint for (runs/ or committed)."""
    found = {int(p.name[4:]) for p in (RUNS / dataset / name).glob("seed*") if finished(p) and p.name[4:].isdigit()}
    found |= {int(m.group(1)) for p in (COMMITTED / dataset / name).glob("seed*.pt")
              if (m := SEED_FILE.fullmatch(p.name))}  # seed<k>.pt, not seed<k>.epoch<j>.pt
    return sorted(found)


def main_checkpoints(dataset: str = "fashion-mnist", labels: Optional[List[str]] = None, seed: int = 0) -> Dict[str, str]:
    return {label: str(checkpoint(model, dataset, seed=seed)) for label, model in MAIN_MODELS.items()
            if labels is None or label in labels}


def seed_checkpoints(dataset: str = "fashion-mnist", runs: Optional[Dict[str, str]] = None) -> Dict[int, Dict[str, str]]:
    """``{seed: {label: checkpoint}}`` for every seed all of ``runs`` (label -> run name; default the
    main three) were trained with."""
    runs = runs or MAIN_MODELS
    common = sorted(set.intersection(*(set(seeds_of(name, dataset)) for name in runs.values())))
    if not common:
        raise SystemExit(f"no seed has a checkpoint of every one of {', '.join(runs.values())} on {dataset}: "
                         f"run `uv run python analyses/train_models.py --dataset {dataset}` first")
    return {seed: {label: str(checkpoint(name, dataset, seed=seed)) for label, name in runs.items()} for seed in common}


def over_seed_runs(study: Callable[[List[str], List[str]], pd.DataFrame], dataset: str,
                   runs: Optional[Dict[str, str]] = None) -> pd.DataFrame:
    """``study(checkpoints, labels) -> frame`` on each seed's checkpoints, stacked with the seeds column."""
    from attnlab.seeds import stack_runs

    frames = {}
    for seed, ckpts in seed_checkpoints(dataset, runs).items():
        print(f"seed {seed}: {', '.join(ckpts)}", flush=True)
        frames[seed] = study(list(ckpts.values()), list(ckpts))
    return stack_runs(frames)


def write_over_seeds(stage: Path, name: str, runs: pd.DataFrame,
                     comparisons: Sequence[Tuple[str, str]] = COMPARISONS) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """Write ``<name>_runs.csv`` (every run's rows), ``<name>.csv`` (mean over seeds with t intervals)
    and ``<name>_differences.csv`` (paired differences over seeds); return (summary, differences)."""
    from attnlab.seeds import over_seeds, paired_differences
    from attnlab.tables import write_csv

    summary = over_seeds(runs)
    present = set(runs["model"])
    diffs = [paired_differences(runs, a, b) for a, b in comparisons if a in present and b in present]
    diff = pd.concat(diffs, ignore_index=True) if diffs else summary.iloc[0:0]
    write_csv(runs, stage / f"{name}_runs.csv")
    write_csv(summary, stage / f"{name}.csv")
    write_csv(diff, stage / f"{name}_differences.csv")
    return summary, diff


def setting(dataset: str, images: int) -> str:
    """What differs from the papers' setting, for figure captions."""
    data = {"fashion-mnist": "Fashion-MNIST (28 px padded to 32), 2 epochs",
            "cifar10": "CIFAR-10 (32 px, 40k training images), 3 epochs"}.get(dataset, dataset)
    return f"here: {data}, micro models (0.8M parameters), {images} test images; papers: ImageNet-1K 224 px, 300 epochs"


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
