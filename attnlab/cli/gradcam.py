"""``attnlab gradcam``: GradCAM-family maps (pytorch-grad-cam), Chefer's gradient-weighted attention rollout,
attention rollout and their faithfulness, for one or more checkpoints."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from .common import (ModelOption, OfficialConfigOption, PretrainedOption, WorkersOption, main_rank_prints,
                     user_errors, workers_or_default)
from .progress import progress_bars

METHOD_NAMES = "gradcam, gradcam++, xgradcam, eigencam, layercam, scorecam, ablationcam, chefer, attn-grad"
METHOD_HELP = (f"Attribution method, repeatable or comma-separated: {METHOD_NAMES} (chefer: gradient-weighted "
               "attention rollout, Chefer et al. 2021; attn-grad: the last layer's attention x its gradient) "
               "(default: gradcam).")
FAITHFULNESS_HELP = ("Faithfulness protocols, comma-separated: road (ROAD + confidence drop), perturbation "
                     "(Chefer's positive / negative patch-removal curves: patches zeroed in the normalised input), "
                     "deletion (RISE deletion and insertion curves). Default: road,perturbation.")
#: gradcam.csv metrics summarised on the terminal, when measured.
SUMMARY = ("road_combined", "confidence_drop", "perturbation_positive_probability_auc",
           "perturbation_negative_probability_auc", "deletion_auc", "insertion_auc")


@main_rank_prints
@user_errors
def gradcam(
    ckpt: Annotated[List[str], typer.Option("--ckpt", help="Checkpoint (repeat for several models in one figure).")],
    paths: Annotated[Optional[List[Path]], typer.Argument(help="More image files or folders (with --images).", show_default=False)] = None,
    label: Annotated[Optional[List[str]], typer.Option("--label", help="Name of each model in tables and titles (one per --ckpt).")] = None,
    images: Annotated[Optional[List[Path]], typer.Option("--images", help="Image files or folders (searched recursively).")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="Dataset name: fashion-mnist, cifar10, cifar100, pets, flowers102, imagefolder, imagenet, webdataset.")] = None,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Where the dataset lives (its official layout).")] = None,
    split: Annotated[str, typer.Option(help="Dataset split.")] = "test",
    num_images: Annotated[Optional[int], typer.Option("--num-images", help="Images to explain (default: up to 8).")] = None,
    method: Annotated[Optional[List[str]], typer.Option("--method", help=METHOD_HELP)] = None,
    target: Annotated[str, typer.Option("--target", help="Class to explain: predicted, true (dataset labels), or a class name or index.")] = "predicted",
    layer: Annotated[str, typer.Option("--layer", help="Target layer: auto (the last block's norm1 for class-token models, the last block for pooled ones, the last patch block for CaiT, the last stage for Swin / MViTv2) or a module path such as blocks.4.norm1.")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass (and ScoreCAM / AblationCAM batch).")] = 16,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    workers: WorkersOption = None,
    metrics: Annotated[bool, typer.Option("--metrics/--no-metrics", help="Compute the faithfulness metrics (the slow part on large images).")] = True,
    faithfulness: Annotated[Optional[List[str]], typer.Option("--faithfulness", help=FAITHFULNESS_HELP)] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("out/gradcam"),
    model: ModelOption = None,
    pretrained: PretrainedOption = False,
    official_config: OfficialConfigOption = None,
) -> None:
    """Where each model looks: CAM and attention x gradient maps over the images, attention rollout, and their
    faithfulness (ROAD, confidence drop, perturbation and deletion / insertion curves). Writes gradcam.png/.pdf,
    gradcam_maps.npz, gradcam.csv and, with curves, faithfulness_curves.png/.pdf."""
    from ..errors import AttnlabError, plural
    from ..paths import check_output_dir
    from ..studies.attribution import explain

    check_output_dir(out)  # before any work

    all_images = list(images or []) + list(paths or [])
    if paths and not images:
        raise AttnlabError(f"unexpected argument {paths[0]}; image paths go after --images")
    # explain checks every option (bad method names too) before any model is loaded
    with progress_bars() as bar:
        result = explain(ckpt, label, images=all_images or None, dataset=dataset, data_dir=data_dir, split=split,
                         num_images=num_images, methods=method, target=target, layer=layer, batch_size=batch_size,
                         device=device, metrics=metrics, faithfulness=faithfulness, model=model, pretrained=pretrained,
                         official_config=official_config, log=lambda line: typer.echo(line, err=True),
                         progress_factory=lambda label, total: bar(label, total, "maps"),
                         workers=workers_or_default(workers))
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    written = result.save(out)
    frame = result.frame[result.frame["head"] == -1]
    summary = frame[frame["metric"].isin(SUMMARY)]
    if metrics and not summary.empty:
        table = summary.pivot_table(index=["model", "transform"], columns="metric", values="value", sort=False)
        table = table[[c for c in SUMMARY if c in table.columns]]
        n = len(result.names)
        typer.echo(f"faithfulness, mean over {plural(n, 'image')} (probability units; higher is better for "
                   "road_combined, the negative-perturbation and insertion areas, lower for the positive and "
                   "deletion areas):")
        typer.echo(table.round(4).to_string())
    prob = frame[frame["metric"] == "probability"].set_index("model")["value"]
    typer.echo("mean probability of the explained class: " + ", ".join(f"{k} {v:.3f}" for k, v in prob.items()))
    typer.echo("wrote " + ", ".join(str(p) for p in written))
