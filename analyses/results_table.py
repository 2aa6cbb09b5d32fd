"""The README's table of the families: accuracy from the runs, robustness and attention from figures/.

    uv run python analyses/results_table.py [--dataset fashion-mnist]
"""
import pandas as pd
from common import FIGURES, MAIN_MODELS, RUNS, out_dir, parser

if __name__ == "__main__":
    args = parser(__doc__).parse_args()
    rob = pd.read_csv(out_dir("03_robustness", args.dataset) / "robustness.csv")
    glob = pd.read_csv(out_dir("01_globality", args.dataset) / "globality.csv")
    ent = pd.read_csv(out_dir("02_entropy", args.dataset) / "entropy.csv")
    rows = []
    for label, name in MAIN_MODELS.items():
        m = pd.read_csv(RUNS / args.dataset / name / "metrics.csv")
        best = m.loc[m["top1"].idxmax()]

        def r(transform, magnitude, metric):
            d = rob[(rob["model"] == label) & (rob["transform"] == transform) & (rob["magnitude"] == magnitude)
                    & (rob["metric"] == metric)]
            return f"{100 * d['value'].item():.1f}" if len(d) else "-"

        def layer_value(df, metric, layer):
            d = df[(df["model"] == label) & (df["metric"] == metric) & (df["head"] == -1)
                   & (df["attention"] == "applied")].sort_values("layer")
            return f"{d['value'].iloc[layer]:.2f}"

        rows.append({"model": label, "top-1 %": f"{best['top1']:.2f}", "epochs": int(best["epoch"]),
                     "train s": f"{m['seconds'].sum():.0f}",
                     "acc % shift 4 px": r("shift-h", 4, "accuracy"), "acc % shift 8 px": r("shift-h", 8, "accuracy"),
                     "consistency % 4 px": r("shift-h", 4, "consistency"),
                     "acc % scale 0.75": r("scale", 0.75, "accuracy"), "acc % scale 1.25": r("scale", 1.25, "accuracy"),
                     "MAD L1 / L6 px": f"{layer_value(glob, 'mad_px', 0)} / {layer_value(glob, 'mad_px', -1)}",
                     "entropy/logN L1 / L6": f"{layer_value(ent, 'entropy_norm', 0)} / {layer_value(ent, 'entropy_norm', -1)}"})
    table = pd.DataFrame(rows)
    print("| " + " | ".join(table.columns) + " |")
    print("|" + "---|" * len(table.columns))
    for _, row in table.iterrows():
        print("| " + " | ".join(str(v) for v in row) + " |")
