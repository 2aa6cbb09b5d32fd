"""The `a` ablation: accuracy and globality of ReViT with a fixed a in {0.25, 0.5, 0.75, 1.0}
(a = 1 is plain ViT attention) and with a learnable a, and where the learnable a ends up.

Reads runs/<dataset>/revit_micro_a*/ from `analyses/train_models.py --only ablation`.
Writes figures/05_alpha_ablation/ (alpha_ablation.csv, accuracy and attention-distance figure).
"""
import matplotlib.pyplot as plt
import pandas as pd
import torch
from common import RUNS, dataset_args, out_dir, parser

from attnlab import load_model, measure_attention
from attnlab.checkpoint import file_sha256
from attnlab.outputs import staged_outputs
from attnlab.plots import model_palette, save_figure, use_style
from attnlab.tables import tidy, write_csv

RUN_NAMES = ["revit_micro_a0.25", "revit_micro_a0.5", "revit_micro_a0.75", "revit_micro_a1.0", "revit_micro_a-learned"]

if __name__ == "__main__":
    args = parser(__doc__).parse_args()
    runs = {n: RUNS / args.dataset / n / "best.pt" for n in RUN_NAMES if (RUNS / args.dataset / n / "best.pt").exists()}
    if not runs:
        raise SystemExit("no ablation runs: run `uv run python analyses/train_models.py --only ablation` first")
    labels = {n: ("a learned" if n.endswith("learned") else "a = " + n.split("_a")[1]) for n in runs}
    frame = measure_attention([str(p) for p in runs.values()], [labels[n] for n in runs], num_images=args.images,
                              metrics=("mad_px",), **dataset_args(args)).frame
    rows = []
    for n, path in runs.items():
        model, spec = load_model(path)
        m = spec.provenance["metrics"]
        alpha = model.alpha.detach().flatten()
        rows.append(dict(model=labels[n], checkpoint=file_sha256(path), arch=spec.arch, metric="top1", value=float(m["top1"]),
                         n_images=10000))
        rows.append(dict(model=labels[n], checkpoint=file_sha256(path), arch=spec.arch, metric="alpha",
                         value=float(alpha.mean()), n_images=0))
    summary = tidy(rows)
    use_style()
    fig, axes = plt.subplots(1, 2, figsize=(7.2, 2.8))
    acc = summary[summary["metric"] == "top1"]
    palette = model_palette(list(acc["model"]))
    axes[0].bar(acc["model"], acc["value"], color=[palette[m] for m in acc["model"]])
    axes[0].set_ylim(acc["value"].min() - 3, min(100, acc["value"].max() + 2))
    axes[0].set_ylabel("top-1 (%)")
    axes[0].tick_params(axis="x", rotation=30)
    mad = frame[(frame["metric"] == "mad_px") & (frame["head"] == -1) & (frame["attention"] == "applied")]
    for model, d in mad.groupby("model", sort=False):
        d = d.sort_values("layer")
        axes[1].plot(d["layer"] + 1, d["value"], marker="o", color=palette[model], label=model)
    axes[1].set_xlabel("layer")
    axes[1].set_ylabel("mean attention distance (px)")
    axes[1].legend(frameon=False)
    fig.tight_layout()
    with staged_outputs(out_dir("05_alpha_ablation", args.dataset)) as stage:
        write_csv(pd.concat([summary, frame], ignore_index=True), stage / "alpha_ablation.csv")
        save_figure(fig, stage, "alpha_ablation")
    print(summary[["model", "metric", "value"]].to_string(index=False))
