"""Feature diversity per layer: do tokens collapse? Mean pairwise cosine similarity of the
patch tokens and effective rank of the patch-token matrix after every block, for the three
families. Writes figures/07_feature_diversity/.
"""
import matplotlib.pyplot as plt
from common import dataset_args, main_checkpoints, out_dir, parser

from attnlab import measure_attention
from attnlab.outputs import staged_outputs
from attnlab.plots import model_palette, save_figure, use_style
from attnlab.studies import FEATURE_METRICS
from attnlab.tables import write_csv

if __name__ == "__main__":
    args = parser(__doc__).parse_args()
    ckpts = main_checkpoints(args.dataset)
    frame = measure_attention(list(ckpts.values()), list(ckpts), num_images=args.images,
                              metrics=FEATURE_METRICS, **dataset_args(args)).frame
    use_style()
    fig, axes = plt.subplots(1, 2, figsize=(7.2, 2.8))
    palette = model_palette(list(frame["model"].unique()))
    for ax, metric, label in [(axes[0], "token_cosine", "mean cosine similarity of patch tokens"),
                              (axes[1], "effective_rank", "effective rank of patch tokens")]:
        for model, d in frame[frame["metric"] == metric].groupby("model", sort=False):
            d = d.sort_values("layer")
            ax.plot(d["layer"] + 1, d["value"].astype(float), marker="o", color=palette[model], label=model)
            ax.fill_between(d["layer"] + 1, d["ci_low"].astype(float), d["ci_high"].astype(float), color=palette[model],
                            alpha=0.2, linewidth=0)
        ax.set_xlabel("block")
        ax.set_ylabel(label)
    axes[0].legend(frameon=False)
    fig.tight_layout()
    with staged_outputs(out_dir("07_feature_diversity", args.dataset)) as stage:
        write_csv(frame, stage / "feature_diversity.csv")
        save_figure(fig, stage, "feature_diversity")
    print(frame[frame["metric"] == "token_cosine"].pivot_table(index="model", columns="layer", values="value").round(3))
