"""``attnlab globality`` and ``attnlab entropy``: attention metrics of one or more checkpoints."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Callable, List, Optional

import typer
from typing_extensions import Annotated

from .common import (ModelOption, OfficialConfigOption, PretrainedOption, WorkersOption, main_rank_prints,
                     user_errors, workers_or_default, write_once)
from .progress import progress_bars

_DOCS = {
    "globality": "Mean attention distance, non-locality and globality curves per layer and head "
                 "(ReViT's claim: residual attention stays local longer); --metrics adds high-norm tokens and "
                 "the attention they draw. Writes globality.csv and figures.",
    "entropy": "Attention entropy per layer and head, with confidence bands over images "
               "(CB's claim: context broadcasting lowers the entropy of learned attention). Writes entropy.csv and figures.",
}


def _parse_radii(text: str) -> List[float]:
    from ..errors import AttnlabError

    try:
        radii = [float(r) for r in text.split(",") if r.strip()]
    except ValueError:
        raise AttnlabError(f"--radii must be comma-separated numbers (patches), e.g. 0,1,2,4; got {text!r}") from None
    if not radii or any(r < 0 for r in radii):
        raise AttnlabError(f"--radii must be non-negative numbers, got {text!r}")
    return radii


def _parse_metrics(text: Optional[str]) -> List[str]:
    """``--metrics a,b``: names of the globality metrics and the high-norm ones (default: the globality ones)."""
    from ..errors import AttnlabError
    from ..studies.attention import GLOBALITY_CHOICES, GLOBALITY_METRICS

    if text is None:
        return list(GLOBALITY_METRICS)
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in GLOBALITY_CHOICES]
    if not names or unknown:
        what = f"unknown --metrics {', '.join(unknown)}" if unknown else "--metrics names no metric"
        raise AttnlabError(f"{what}; choose from {', '.join(GLOBALITY_CHOICES)} (comma-separated)")
    return list(dict.fromkeys(names))


def _make(kind: str) -> Callable[..., None]:
    @main_rank_prints
    @user_errors
    def command(
        ckpt: Annotated[List[str], typer.Option("--ckpt", help="Checkpoint (repeat for several models on one figure).")],
        paths: Annotated[Optional[List[Path]], typer.Argument(help="More image files or folders (with --images).", show_default=False)] = None,
        label: Annotated[Optional[List[str]], typer.Option("--label", help="Name of each model in tables and legends (one per --ckpt).")] = None,
        images: Annotated[Optional[List[Path]], typer.Option("--images", help="Image files or folders (searched recursively).")] = None,
        dataset: Annotated[Optional[str], typer.Option("--dataset", help="Dataset name: fashion-mnist, cifar10, cifar100, pets, flowers102, imagefolder, imagenet, webdataset.")] = None,
        data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Where the dataset lives (its official layout).")] = None,
        split: Annotated[str, typer.Option(help="Dataset split.")] = "test",
        num_images: Annotated[Optional[int], typer.Option("--num-images", help="Images to analyse (default: up to 512).")] = None,
        batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")] = 64,
        device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
        workers: WorkersOption = None,
        radii: Annotated[str, typer.Option(help="Globality-curve radii in patches, comma-separated.")] = "0,1,2,3,4,6,8",
        metrics: Annotated[Optional[str], typer.Option("--metrics", help="Metrics to measure, comma-separated: mad_px, mad_px_raw, nonlocality, globality, prefix_mass, and the high-norm tokens token_norm_q25, token_norm_q50, token_norm_q75, token_norm_q99, token_norm_max, high_norm_share, high_norm_mass (default: the five globality metrics).", show_default=False)] = None,
        out: Annotated[Path, typer.Option(help="Output folder.")] = Path(f"out/{kind}"),
        model: ModelOption = None,
        pretrained: PretrainedOption = False,
        official_config: OfficialConfigOption = None,
    ) -> None:
        from ..errors import AttnlabError
        from ..paths import check_output_dir
        from ..studies.attention import ENTROPY_METRICS, measure_attention
        from ..studies.inputs import plural

        check_output_dir(out)  # before any work
        chosen = _parse_metrics(metrics) if kind == "globality" else list(ENTROPY_METRICS)

        all_images = list(images or []) + list(paths or [])
        if paths and not images:
            raise AttnlabError(f"unexpected argument {paths[0]}; image paths go after --images")
        with progress_bars() as bar:
            result = measure_attention(
                ckpt, label, images=all_images or None, dataset=dataset, data_dir=data_dir, split=split,
                num_images=num_images, batch_size=batch_size, device=device, radii=_parse_radii(radii),
                model=model, pretrained=pretrained, official_config=official_config, progress_factory=bar,
                metrics=chosen, workers=workers_or_default(workers),
            )
        for note in result.notes:
            typer.echo(f"note: {note}", err=True)
        written = write_once(lambda: result.save(out))
        metric = "entropy_norm" if kind == "entropy" else "mad_px" if "mad_px" in chosen else chosen[0]
        unit = {"entropy_norm": "entropy / log N", "mad_px": "mean attention distance (px)"}.get(metric, metric)
        typer.echo(f"{unit} per layer, mean over heads, {plural(result.n_images, 'image')}:")
        typer.echo(result.layer_summary(metric).round(3).to_string())
        typer.echo("wrote " + ", ".join(str(p) for p in written))

    command.__name__ = kind
    command.__doc__ = _DOCS[kind]
    if kind == "entropy":  # radii and --metrics choose among the globality metrics only: entropy has neither
        sig = inspect.signature(command, eval_str=True)
        command.__signature__ = sig.replace(parameters=[p for p in sig.parameters.values()
                                                        if p.name not in ("radii", "metrics")])
    return command


globality = _make("globality")
entropy = _make("entropy")
