"""Claim 3 (ReViT): more robust to translation and scale.

For every training seed: accuracy and consistency against a horizontal shift and against
scale (deterministic sweeps, black fill), and the ReViT paper's robustness table under the
official protocol (`--protocol revit-random`: a random translation of up to m pixels per
image, RandomAffine-style, black fill; the paper's magnitudes are not published, so m is
2, 4, 6 and 8 px of the 32 px input, about 6-25%). Means over seeds with t intervals and
paired differences over seeds; the (dx, dy) grid of the first seed. Writes
figures/03_robustness/ (robustness.csv: over seeds; robustness_runs.csv; robustness_differences.csv;
robustness_table.md).
"""
import pandas as pd
from common import dataset_args, out_dir, over_seed_runs, parser, setting, write_over_seeds

from attnlab.outputs import staged_outputs
from attnlab.plots import save_figure
from attnlab.plots import seeds as plots
from attnlab.plots.robustness import shift_grid
from attnlab.studies.robustness import measure_robustness

RANDOM_SHIFTS = [0, 2, 4, 6, 8]


def paper_table(summary: pd.DataFrame, diff: pd.DataFrame, caption: str) -> str:
    """Markdown: top-1 (%) under random translation, mean over seeds +- the t interval's half-width,
    then the paired differences with their intervals."""
    d = summary[(summary["transform"] == "random-translate") & (summary["metric"] == "accuracy")]
    mags = sorted(d["magnitude"].unique())
    seeds = d["seeds"].iloc[0] if len(d) else "-"
    lines = [f"Top-1 (%) under the official ReViT protocol: a random translation of up to m px per image "
             f"(black fill), mean over seeds {seeds} ± half the 95% t interval; paired differences "
             f"[95% t interval]. {caption}; the paper's magnitudes are not published.", "",
             "| model | " + " | ".join(f"up to {m:g} px" for m in mags) + " |", "|---|" + "---|" * len(mags)]
    for model, m in d.groupby("model", sort=False):
        cells = [f"{100 * r.value:.1f} ± {100 * (r.ci_high - r.value):.1f}" for r in m.sort_values("magnitude").itertuples()]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    dd = diff[(diff["transform"] == "random-translate") & (diff["metric"] == "accuracy")]
    for model, m in dd.groupby("model", sort=False):
        cells = [f"{100 * r.value:+.1f} [{100 * r.ci_low:+.1f}, {100 * r.ci_high:+.1f}]"
                 for r in m.sort_values("magnitude").itertuples()]
        lines.append(f"| {model} (paired) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    p = parser(__doc__)
    p.set_defaults(images=500)
    args = p.parse_args()
    common = dict(num_images=args.images, **dataset_args(args))
    grids = {}

    def study(paths, labels):
        line = measure_robustness(paths, labels, shifts=[0, 1, 2, 3, 4, 6, 8, 12],
                                  scales=[0.5, 0.625, 0.75, 0.875, 1.0, 1.125, 1.25, 1.5], **common).frame
        paper = measure_robustness(paths, labels, shifts=RANDOM_SHIFTS, scales=[], protocol="revit-random",
                                   **common).frame
        if not grids:  # the (dx, dy) heatmap: first seed only
            grids["frame"] = measure_robustness(paths, labels, shifts=[-8, -4, -2, 0, 2, 4, 8], direction="grid",
                                                scales=[1.0], **common).frame
        return pd.concat([line, paper[paper["transform"] == "random-translate"]], ignore_index=True)

    runs = over_seed_runs(study, args.dataset)
    caption = setting(args.dataset, args.images)
    with staged_outputs(out_dir("03_robustness", args.dataset)) as stage:
        summary, diff = write_over_seeds(stage, "robustness", runs)
        for transform in ("shift-h", "scale", "random-translate"):
            save_figure(plots.against_magnitude(summary, transform, "accuracy", caption, chance=0.1), stage,
                        f"robustness_{transform}")
        grid = grids["frame"]
        save_figure(shift_grid(grid[grid["transform"] == "shift-grid"], "accuracy"), stage, "robustness_shift-grid")
        (stage / "robustness_table.md").write_text(paper_table(summary, diff, caption))
    print(paper_table(summary, diff, caption))
