"""``attnlab models``: the model families and their names.

The zoo is plain data (``attnlab.models.zoo``), parameter counts included, so listing it
imports neither torch nor timm; timm's own names are listed only with ``--all``.
"""
from __future__ import annotations

import fnmatch
from typing import List, Optional

import typer
from typing_extensions import Annotated

from .common import user_errors


@user_errors
def models(
    pattern: Annotated[str, typer.Argument(help="Shell-style filter, e.g. 'revit_*' or '*patch4_32'.")] = "*",
    family: Annotated[Optional[str], typer.Option(help="Only this family: vit, revit, vit_cb, revit_cb.")] = None,
    params: Annotated[bool, typer.Option("--params/--no-params", help="Show parameter counts (from the sizes; no model is built).")] = True,
    all_timm: Annotated[bool, typer.Option("--all", help="Also list timm's other model names matching PATTERN (imports timm).")] = False,
) -> None:
    """List attnlab's model families (ViT, ReViT, ViT+CB, ReViT+CB) at every size."""
    from ..errors import AttnlabError
    from ..models.zoo import ENTRIES, FAMILIES, list_models

    if family is not None and family not in FAMILIES:
        raise AttnlabError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    if family is not None and all_timm:
        raise AttnlabError("--all lists timm's other names, which belong to no family; drop --family or --all")
    entries = [e for e in list_models(pattern) if family is None or e.family == family]
    others = _timm_names(pattern, exclude=set(ENTRIES)) if all_timm else []
    if not entries and not others:
        raise AttnlabError(f"no model matches {pattern!r}" + (f" in family {family}" if family else "")
                           + ("; run `attnlab models` for the full list" if all_timm else
                              "; run `attnlab models` for the full list, or add --all to search timm's own names"))
    if entries:
        header = ["name", "family", "dim", "depth", "heads", "mlp", "patch", "img", "classes", "params"]
        rows = []
        for e in entries:
            c = e.config
            rows.append([e.name, e.family, c["embed_dim"], c["depth"], c["num_heads"], c["mlp_ratio"],
                         c["patch_size"], c["img_size"], e.num_classes,
                         f"{e.num_params / 1e6:.2f}M" if params else "-"])
        widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
        for r in [header] + rows:
            typer.echo("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
        typer.echo("")
        for name, fam in FAMILIES.items():
            typer.echo(f"{name:9s} {fam.summary}")
    if others:
        typer.echo(("\n" if entries else "") + f"timm's other models matching {pattern!r} ({len(others)}; "
                   "build them with attnlab.create_model or timm.create_model):")
        for name in others:
            typer.echo(name)


def _timm_names(pattern: str, exclude: set) -> List[str]:
    """timm's registered names matching ``pattern``, minus the zoo's (imports timm: seconds)."""
    import timm

    return [n for n in timm.list_models() if fnmatch.fnmatch(n, pattern) and n not in exclude]
