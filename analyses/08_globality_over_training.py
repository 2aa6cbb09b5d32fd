"""Globality over training: per-layer mean attention distance at initialisation and after
every epoch, ViT vs ReViT (does residual attention keep early layers local as it learns?),
over every training seed (means with t intervals over seeds).

Reads runs/<dataset>/<model>/seed<k>/epoch_<j>.pt (train_models.py keeps every epoch of the
main runs), else the committed checkpoints/<dataset>/<model>/seed<k>.epoch<j>.pt, at epochs 1,
2, 4, 8, ... and the last; epoch 0 is the same architecture freshly initialised with the run's
seed. Writes figures/08_globality_over_training/ (globality_over_training.csv:
over seeds; globality_over_training_runs.csv).
"""
import csv
import re

import matplotlib.pyplot as plt
import pandas as pd
import torch
from common import COMMITTED, MAIN_MODELS, RUNS, dataset_args, finished, out_dir, parser, setting

from attnlab import load_model, measure_attention, save_checkpoint
from attnlab.models import create_model
from attnlab.outputs import staged_outputs
from attnlab.plots import save_figure, use_style
from attnlab.seeds import over_seeds, stack_runs
from attnlab.tables import write_csv

MODELS = {label: MAIN_MODELS[label] for label in ("ViT", "ReViT")}


def epoch_files(name: str, dataset: str, seed: int) -> dict:
    """``{epoch: checkpoint}`` of one run at epochs 1, 2, 4, 8, ... and the last: runs/, else committed."""
    run = RUNS / dataset / name / f"seed{seed}"
    if finished(run):
        found = {int(re.findall(r"\d+", p.stem)[0]): p for p in run.glob("epoch_*.pt")}
    else:  # committed: the kept epochs, and the best one as seed<k>.pt
        found = {int(p.suffixes[0][len(".epoch"):]): p for p in (COMMITTED / dataset / name).glob(f"seed{seed}.epoch*.pt")}
        if found:
            rows = list(csv.DictReader((COMMITTED / dataset / name / f"seed{seed}.metrics.csv").open()))
            found[int(max(rows, key=lambda r: float(r["top1"]))["epoch"])] = COMMITTED / dataset / name / f"seed{seed}.pt"
    last = max(found, default=0)
    return {e: found[e] for e in sorted(found) if e & (e - 1) == 0 or e == last}


def one_seed(seed: int, args) -> pd.DataFrame:  # noqa: ANN001
    frames = []
    tmp = RUNS / args.dataset / "_init"
    for label, name in MODELS.items():
        files = epoch_files(name, args.dataset, seed)
        trained, spec = load_model(files[max(files)])
        torch.manual_seed(spec.provenance.get("seed", seed))
        init = create_model(spec.arch, **spec.options)
        init_path = save_checkpoint(init, tmp / f"{name}_seed{seed}.pt", classes=spec.classes, input_spec=spec.input,
                                    provenance={"epochs": 0, "seed": seed})
        for epoch, path in [(0, init_path)] + sorted(files.items()):
            frame = measure_attention([str(path)], [label], num_images=args.images, metrics=("mad_px",),
                                      **dataset_args(args)).frame
            frame = frame[(frame["head"] == -1) & (frame["attention"] == "applied")].copy()
            frame["transform"], frame["magnitude"] = "epoch", float(epoch)
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)


if __name__ == "__main__":
    args = parser(__doc__).parse_args()
    seeds = [s for s in range(100) if all(epoch_files(n, args.dataset, s) for n in MODELS.values())]
    if not seeds:
        raise SystemExit(f"no epoch checkpoints of {', '.join(MODELS.values())} on {args.dataset}: run "
                         "`uv run python analyses/train_models.py --only main` first")
    runs = stack_runs({seed: one_seed(seed, args) for seed in seeds})
    summary = over_seeds(runs)
    use_style()
    fig, axes = plt.subplots(1, len(MODELS), figsize=(7.2, 3.0), sharey=True)
    cmap = plt.get_cmap("viridis")
    for ax, label in zip(axes, MODELS):
        d = summary[summary["model"] == label]
        epochs = sorted(d["magnitude"].unique())
        for k, e in enumerate(epochs):
            de = d[d["magnitude"] == e].sort_values("layer")
            color = cmap(k / max(len(epochs) - 1, 1))
            ax.plot(de["layer"] + 1, de["value"], marker="o", color=color, label="init" if e == 0 else f"epoch {int(e)}")
            ax.fill_between(de["layer"] + 1, de["ci_low"], de["ci_high"], color=color, alpha=0.2, linewidth=0)
        ax.set_title(label)
        ax.set_xlabel("layer")
    axes[0].set_ylabel("mean attention distance (px)")
    axes[-1].legend(frameon=False)
    fig.suptitle(f"Attention distance over training (band: 95% t interval over {len(seeds)} seeds)\n"
                 f"{setting(args.dataset, args.images)}", fontsize=8)
    fig.tight_layout()
    with staged_outputs(out_dir("08_globality_over_training", args.dataset)) as stage:
        write_csv(runs, stage / "globality_over_training_runs.csv")
        write_csv(summary, stage / "globality_over_training.csv")
        save_figure(fig, stage, "globality_over_training")
    print(summary.pivot_table(index=["model", "magnitude"], columns="layer", values="value").round(2))
