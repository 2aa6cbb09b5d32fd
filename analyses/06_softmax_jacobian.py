"""Claim 4 (CB): dense attention is hard to learn through the softmax.

For a = softmax(z), J = diag(a) - a a^T and ||J||_F^2 = sum a^2 - 2 sum a^3 + (sum a^2)^2
(computed, not drawn by hand). (1) Rows of random logits at many temperatures over N tokens:
||J||_F^2 against the row's entropy / log N, with the uniform value (N-1)/N^2 marked.
(2) Every head of the trained models: mean entropy / log N against mean ||J||_F^2 of
its rows. Writes figures/06_softmax_jacobian/ (CSV and figure).
"""
import math

import matplotlib.pyplot as plt
import pandas as pd
import torch
from common import dataset_args, main_checkpoints, out_dir, parser

from attnlab.capture import run_with_cache
from attnlab.data import eval_transform, load_dataset
from attnlab.metrics import softmax_jacobian_sq_norm, uniform_jacobian_sq_norm
from attnlab.outputs import staged_outputs
from attnlab.plots import model_palette, save_figure, use_style
from attnlab.studies import load_models
from attnlab.tables import tidy, write_csv


def random_rows(n: int, per_temperature: int = 200) -> pd.DataFrame:
    g = torch.Generator().manual_seed(0)
    rows = []
    for log_t in torch.linspace(-2, 1.5, 36):
        z = torch.randn(per_temperature, n, generator=g, dtype=torch.float64) / (10 ** log_t)
        a = z.softmax(-1)
        ent = -(torch.special.xlogy(a, a)).sum(-1) / math.log(n)
        jac = softmax_jacobian_sq_norm(a)
        rows += [{"entropy_norm": float(e), "jacobian_sq": float(j)} for e, j in zip(ent, jac)]
    return pd.DataFrame(rows)


def head_points(ckpts, args) -> pd.DataFrame:
    out = []
    for m in load_models(list(ckpts.values()), list(ckpts)):
        data = dataset_args(args)
        ds = load_dataset(data["dataset"], split="test", data_dir=data["data_dir"],
                          channels=m.spec.input.channels).subset(256)
        tf = eval_transform(m.spec.input)
        x = torch.stack([tf(ds.load_image(i)) for i in range(len(ds))])
        _, cache = run_with_cache(m.model, x, "*.attn.pattern")
        for layer, a in enumerate(cache.stack("attn.pattern")):
            n = a.shape[-1]
            ent = (-(torch.special.xlogy(a.double(), a.double())).sum(-1) / math.log(n)).mean(dim=(0, 2))
            jac = softmax_jacobian_sq_norm(a).mean(dim=(0, 2))
            for h in range(a.shape[1]):
                out.append(dict(model=m.label, checkpoint=m.checkpoint, arch=m.spec.arch, attention="applied",
                                layer=layer, head=h, n_images=len(ds), entropy_norm=float(ent[h]),
                                jacobian_sq=float(jac[h]), n_tokens=n))
    return pd.DataFrame(out)


if __name__ == "__main__":
    args = parser(__doc__).parse_args()
    ckpts = main_checkpoints(args.dataset)
    heads = head_points(ckpts, args)
    n = int(heads["n_tokens"].iloc[0])
    rand = random_rows(n)
    use_style()
    fig, axes = plt.subplots(1, 2, figsize=(7.2, 2.8))
    axes[0].scatter(rand["entropy_norm"], rand["jacobian_sq"], s=2, alpha=0.25, color="0.4", edgecolors="none")
    axes[0].axhline(uniform_jacobian_sq_norm(n), color="C3", linestyle="--", linewidth=1,
                    label=f"uniform over N={n}: (N-1)/N$^2$")
    axes[0].set_xlabel("entropy / log N of the row")
    axes[0].set_ylabel("$||J||_F^2$ of the softmax")
    axes[0].set_title(f"Random logits, N = {n}")
    axes[0].legend(frameon=False)
    palette = model_palette(list(heads["model"].unique()))
    for model, d in heads.groupby("model", sort=False):
        axes[1].scatter(d["entropy_norm"], d["jacobian_sq"], s=12, color=palette[model], label=model)
    axes[1].set_xlabel("mean entropy / log N of the head")
    axes[1].set_ylabel("mean $||J||_F^2$")
    axes[1].set_title("Trained heads")
    axes[1].legend(frameon=False)
    fig.tight_layout()
    rows = []
    for _, r in heads.iterrows():
        for metric in ("entropy_norm", "jacobian_sq"):
            rows.append(dict(model=r["model"], checkpoint=r["checkpoint"], arch=r["arch"], attention="applied",
                             layer=r["layer"], head=r["head"], metric=metric, value=r[metric], n_images=r["n_images"]))
    with staged_outputs(out_dir("06_softmax_jacobian", args.dataset)) as stage:
        write_csv(tidy(rows), stage / "softmax_jacobian.csv")
        save_figure(fig, stage, "softmax_jacobian")
    corr = heads[["entropy_norm", "jacobian_sq"]].corr(method="spearman").iloc[0, 1]
    print(f"Spearman correlation of head entropy and ||J||^2 over {len(heads)} trained heads: {corr:.3f}")
