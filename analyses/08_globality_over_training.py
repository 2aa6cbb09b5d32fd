"""Globality over training: per-layer mean attention distance at initialisation and after
every epoch, ViT vs ReViT (does residual attention keep early layers local as it learns?),
over every training seed (means with t intervals over seeds).

Reads runs/<dataset>/<model>/seed<k>/epoch_<j>.pt (train_models.py keeps every epoch of the
main runs) at epochs 1, 2, 4, 8, ... and the last; epoch 0 is the same architecture freshly
initialised with the run's seed. The epoch checkpoints are not committed: without runs/ this
script says so. Writes figures/08_globality_over_training/ (globality_over_training.csv:
over seeds; globality_over_training_runs.csv).
"""
import re

import matplotlib.pyplot as plt
import pandas as pd
import torch
from common import MAIN_MODELS, RUNS, dataset_args, finished, out_dir, parser, setting

from attnlab import load_model, measure_attention, save_checkpoint
from attnlab.models import create_model
from attnlab.outputs import staged_outputs
from attnlab.plots import save_figure, use_style
from attnlab.seeds import over_seeds, stack_runs
from attnlab.tables import write_csv

MODELS = {label: MAIN_MODELS[label] for label in ("ViT", "ReViT")}


def epochs_of(run) -> list:  # noqa: ANN001
    epochs = sorted(int(re.findall(r"\d+", p.stem)[0]) for p in run.glob("epoch_*.pt"))
    return [e for e in epochs if e & (e - 1) == 0 or e == epochs[-1]]  # 1, 2, 4, 8, ... and the last


def one_seed(seed: int, args) -> pd.DataFrame:  # noqa: ANN001
    frames = []
    tmp = RUNS / args.dataset / "_init"
    for label, name in MODELS.items():
        run = RUNS / args.dataset / name / f"seed{seed}"
        epochs = epochs_of(run)
        trained, spec = load_model(run / f"epoch_{epochs[-1]}.pt")
        torch.manual_seed(spec.provenance.get("seed", seed))
        init = create_model(spec.arch, **spec.options)
        init_path = save_checkpoint(init, tmp / f"{name}_seed{seed}.pt", classes=spec.classes, input_spec=spec.input,
                                    provenance={"epochs": 0, "seed": seed})
        for epoch, path in [(0, init_path)] + [(e, run / f"epoch_{e}.pt") for e in epochs]:
            frame = measure_attention([str(path)], [label], num_images=args.images, metrics=("mad_px",),
                                      **dataset_args(args)).frame
            frame = frame[(frame["head"] == -1) & (frame["attention"] == "applied")].copy()
            frame["transform"], frame["magnitude"] = "epoch", float(epoch)
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)


if __name__ == "__main__":
    args = parser(__doc__).parse_args()
    seeds = [int(p.name[4:]) for p in sorted((RUNS / args.dataset / MODELS["ViT"]).glob("seed*"))
             if all(finished(RUNS / args.dataset / n / p.name) for n in MODELS.values())]
    if not seeds:
        raise SystemExit(f"no epoch checkpoints in {RUNS / args.dataset}: run `uv run python analyses/train_models.py "
                         "--only main` first (they are not committed)")
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
