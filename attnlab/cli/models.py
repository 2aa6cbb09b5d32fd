"""``attnlab models``: the model families and their names."""
from __future__ import annotations

from typing import Optional

import typer
from typing_extensions import Annotated

from .common import user_errors


@user_errors
def models(
    pattern: Annotated[str, typer.Argument(help="Shell-style filter, e.g. 'revit_*' or '*patch4_32'.")] = "*",
    family: Annotated[Optional[str], typer.Option(help="Only this family: vit, revit, vit_cb, revit_cb.")] = None,
    params: Annotated[bool, typer.Option("--params/--no-params", help="Count parameters (builds each model on the meta device).")] = True,
) -> None:
    """List attnlab's model families (ViT, ReViT, ViT+CB, ReViT+CB) at every size."""
    from ..errors import AttnlabError
    from ..models.zoo import FAMILIES, list_models

    if family is not None and family not in FAMILIES:
        raise AttnlabError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    entries = [e for e in list_models(pattern) if family is None or e.family == family]
    if not entries:
        raise AttnlabError(f"no model matches {pattern!r}" + (f" in family {family}" if family else "")
                           + "; run `attnlab models` for the full list")
    counts = {}
    if params:
        import torch

        from ..models import create_model

        for e in entries:
            with torch.device("meta"):
                counts[e.name] = sum(p.numel() for p in create_model(e.name).parameters())
    header = ["name", "family", "dim", "depth", "heads", "mlp", "patch", "img", "classes", "params"]
    rows = []
    for e in entries:
        c = e.config
        rows.append([e.name, e.family, c["embed_dim"], c["depth"], c["num_heads"], c["mlp_ratio"],
                     c["patch_size"], c["img_size"], c.get("num_classes", 1000),
                     f"{counts[e.name] / 1e6:.2f}M" if e.name in counts else "-"])
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for r in [header] + rows:
        typer.echo("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
    typer.echo("")
    for name, fam in FAMILIES.items():
        typer.echo(f"{name:9s} {fam.summary}")
