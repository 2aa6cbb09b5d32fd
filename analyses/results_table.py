"""The README's table of the families, over training seeds: each cell the mean over seeds ± the
half-width of its 95% t interval (seeds listed in the last column). Accuracy from each run's
metrics.csv, robustness and attention from the over-seed CSVs in figures/. Then the readings:
every paired difference against ViT (top-1, distance and entropy per layer, robustness per
magnitude, token cosine and effective rank per block) with its interval, "no difference
shown:" where the interval covers zero.

    uv run python analyses/results_table.py [--dataset fashion-mnist]
"""
import csv

import pandas as pd
from common import MAIN_MODELS, metrics_csv, out_dir, parser, seeds_of

from attnlab.seeds import describe, paired_differences, stack_runs, t_interval
from attnlab.tables import tidy


def best_top1(name: str, dataset: str, seed: int) -> float:
    """The best epoch's top-1 of one run, from its metrics.csv (runs/ or beside the committed checkpoint)."""
    return max(float(r["top1"]) for r in csv.DictReader(metrics_csv(name, dataset, seed).open()))


def cell(mean: float, high: float, scale: float = 1.0, digits: int = 1) -> str:
    half = (high - mean) * scale
    return f"{mean * scale:.{digits}f} ± {half:.{digits}f}" if half == half else f"{mean * scale:.{digits}f}"


if __name__ == "__main__":
    args = parser(__doc__).parse_args()
    rob = pd.read_csv(out_dir("03_robustness", args.dataset) / "robustness.csv")
    glob = pd.read_csv(out_dir("01_globality", args.dataset) / "globality.csv")
    ent = pd.read_csv(out_dir("02_entropy", args.dataset) / "entropy.csv")
    rows = []
    seeds = sorted(set.intersection(*(set(seeds_of(n, args.dataset)) for n in MAIN_MODELS.values())))  # as the CSVs
    for label, name in MAIN_MODELS.items():
        top1 = t_interval([best_top1(name, args.dataset, s) for s in seeds])

        def r(transform, magnitude, metric):
            d = rob[(rob["model"] == label) & (rob["transform"] == transform) & (rob["magnitude"] == magnitude)
                    & (rob["metric"] == metric)]
            return cell(d["value"].item(), d["ci_high"].item(), 100) if len(d) else "-"

        def layer(df, metric, k):
            d = df[(df["model"] == label) & (df["metric"] == metric) & (df["head"] == -1)
                   & (df["attention"] == "applied")].sort_values("layer")
            return cell(d["value"].iloc[k], d["ci_high"].iloc[k], digits=2)

        rows.append({"model": label, "top-1 %": cell(top1[0], top1[3], digits=2),
                     "acc % shift 4 px": r("shift-h", 4, "accuracy"), "consistency % 4 px": r("shift-h", 4, "consistency"),
                     "acc % random shift <= 4 px": r("random-translate", 4, "accuracy"),
                     "acc % scale 0.75": r("scale", 0.75, "accuracy"), "acc % scale 1.25": r("scale", 1.25, "accuracy"),
                     "MAD layer 1 (px)": layer(glob, "mad_px", 0), "MAD layer 6 (px)": layer(glob, "mad_px", -1),
                     "entropy / log N layer 1": layer(ent, "entropy_norm", 0),
                     "entropy / log N layer 6": layer(ent, "entropy_norm", -1),
                     "seeds": ",".join(map(str, seeds))})
    table = pd.DataFrame(rows)
    print("| " + " | ".join(table.columns) + " |")
    print("|" + "---|" * len(table.columns))
    for _, row in table.iterrows():
        print("| " + " | ".join(str(v) for v in row) + " |")

    top1_runs = stack_runs({s: tidy([dict(model=label, checkpoint="-", metric="top1", value=best_top1(name, args.dataset, s),
                                          n_images=10000) for label, name in MAIN_MODELS.items()])
                            for s in seeds})
    diffs = {"top-1 (%)": pd.concat([paired_differences(top1_runs, a, "ViT") for a in ("ReViT", "ViT+CB")])}
    for name, metrics in (("01_globality", ["mad_px"]), ("02_entropy", ["entropy_norm"]),
                          ("03_robustness", ["accuracy", "consistency"]),
                          ("07_feature_diversity", ["token_cosine", "effective_rank"])):
        d = pd.read_csv(out_dir(name, args.dataset) / f"{name.split('_', 1)[1]}_differences.csv")
        for metric in metrics:
            diffs[metric] = d[(d["metric"] == metric) & (d["attention"] != "own")]
    print()
    for what, d in diffs.items():
        for _, row in d.iterrows():
            where = (f"layer {int(row['layer']) + 1}" if row["layer"] >= 0 else "") + \
                (f" {row['transform']} {row['magnitude']:g}" if row["transform"] != "none" else "")
            scale = 100 if what in ("accuracy", "consistency") else 1
            row = row.copy()
            for c in ("value", "ci_low", "ci_high"):
                row[c] = row[c] * scale
            print(f"{row['model']:<14} {what:<15} {where:<22} {describe(row, digits=2)}")
