"""The attention studies behind ``attnlab globality`` and ``attnlab entropy``, as a Python API.

    frame, notes = measure_attention(["vit.pt", "revit.pt"], dataset="fashion-mnist")
    write_globality(frame, "out/globality")      # globality.csv + figures (PNG and PDF)

One pass over the images measures every metric; each command writes its share of the
rows (tidy, ``attnlab.tables`` schema) and its figures, all or nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import pandas as pd
import torch

from .analysis import analyse_attention
from .checkpoint import file_sha256, load_model
from .errors import AttnlabError
from .metrics import DEFAULT_RADII
from .outputs import staged_outputs
from .spec import ModelSpec
from .tables import write_csv

GLOBALITY_METRICS = ("mad_px", "mad_px_raw", "nonlocality", "globality", "prefix_mass")
ENTROPY_METRICS = ("entropy", "entropy_norm", "entropy_patch", "entropy_prefix")
FEATURE_METRICS = ("token_cosine", "effective_rank")
DEFAULT_NUM_IMAGES = 512

Log = Callable[[str], None]


@dataclass
class LoadedModel:
    label: str
    model: torch.nn.Module
    spec: ModelSpec
    checkpoint: str  # short sha256 of the file, or timm:<name>


def load_models(
    ckpts: Sequence[str],
    labels: Optional[Sequence[str]] = None,
    *,
    model: Optional[str] = None,
    pretrained: bool = False,
    official_config: Optional[Union[str, Path]] = None,
) -> List[LoadedModel]:
    """Load every checkpoint with a label (``labels``, else the file name, made unique)."""
    if not ckpts:
        raise AttnlabError("no checkpoint given; pass --ckpt FILE (once per model)")
    if labels and len(labels) != len(ckpts):
        raise AttnlabError(f"{len(labels)} --label values for {len(ckpts)} --ckpt values; give one label per checkpoint")
    out = []
    seen: dict = {}
    for i, ckpt in enumerate(ckpts):
        net, spec = load_model(ckpt, model=model, pretrained=pretrained, official_config=official_config)
        label = labels[i] if labels else (Path(ckpt).stem if Path(ckpt).is_file() else str(ckpt))
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label}-{seen[label]}"
        ident = file_sha256(ckpt) if Path(ckpt).is_file() else f"timm:{ckpt}"
        out.append(LoadedModel(label, net, spec, ident))
    return out


def open_images(
    spec: ModelSpec,
    *,
    images: Optional[Sequence[Union[str, Path]]] = None,
    dataset: Optional[str] = None,
    data_dir: Optional[Union[str, Path]] = None,
    split: str = "test",
    num_images: Optional[int] = None,
):
    """The images to analyse, prepared for ``spec``'s input (size, channels, normalisation)."""
    from .data import eval_transform, load_dataset
    from .data.files import load_image_files

    if num_images is not None and num_images < 1:
        raise AttnlabError(f"--num-images must be at least 1, not {num_images}")
    if (images is None) == (dataset is None):
        raise AttnlabError("pass either --images PATH... or --dataset NAME (with --data-dir DIR), not both or neither")
    if images is not None:
        ds = load_image_files(images, channels=spec.input.channels)
    else:
        ds = load_dataset(dataset, split=split, data_dir=data_dir, channels=spec.input.channels)
    if num_images is not None and num_images > len(ds):
        raise AttnlabError(f"--num-images {num_images} is more than the {len(ds)} images available; "
                           f"pass --num-images {len(ds)} or fewer")
    ds = ds.subset(num_images if num_images is not None else min(len(ds), DEFAULT_NUM_IMAGES))
    return ds.with_transform(eval_transform(spec.input))


def data_notes(ds, spec: ModelSpec, label: str) -> List[str]:
    """What happened to the data on the way in: conversions, unreadable and ignored files."""
    notes = []
    if ds.conversions:
        what = ", ".join(f"{k} x{v}" for k, v in sorted(ds.conversions.items()))
        notes.append(f"{label}: converted images to the model's {spec.input.channels}-channel input ({what})")
    if ds.unreadable:
        notes.append(f"{label}: skipped {len(ds.unreadable)} unreadable image files (e.g. {ds.unreadable[0]})")
    if getattr(ds, "ignored", None):
        notes.append(f"{label}: ignored {len(ds.ignored)} files that are not images (e.g. {ds.ignored[0]})")
    return notes


def measure_attention(
    ckpts: Sequence[str],
    labels: Optional[Sequence[str]] = None,
    *,
    images: Optional[Sequence[Union[str, Path]]] = None,
    dataset: Optional[str] = None,
    data_dir: Optional[Union[str, Path]] = None,
    split: str = "test",
    num_images: Optional[int] = None,
    batch_size: int = 64,
    device: Optional[str] = "auto",
    radii: Sequence[float] = DEFAULT_RADII,
    model: Optional[str] = None,
    pretrained: bool = False,
    official_config: Optional[Union[str, Path]] = None,
    metrics: Optional[Sequence[str]] = None,
    progress_factory: Optional[Callable[[str, int], Callable[[int], None]]] = None,
) -> Tuple[pd.DataFrame, List[str]]:
    """Attention metrics (``metrics``, default all) of every checkpoint over the same images: (tidy frame, notes)."""
    if batch_size < 1:
        raise AttnlabError(f"--batch-size must be at least 1, not {batch_size}")
    models = load_models(ckpts, labels, model=model, pretrained=pretrained, official_config=official_config)
    frames, notes = [], []
    for m in models:
        ds = open_images(m.spec, images=images, dataset=dataset, data_dir=data_dir, split=split, num_images=num_images)
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0)
        progress = progress_factory(m.label, len(ds)) if progress_factory else None
        result = analyse_attention(m.model, loader, label=m.label, checkpoint=m.checkpoint, arch=m.spec.arch,
                                   radii=radii, metrics=metrics, device=device, progress=progress)
        frames.append(result.frame)
        notes += data_notes(ds, m.spec, m.label) + result.notes
    return pd.concat(frames, ignore_index=True), notes


def write_globality(frame: pd.DataFrame, out: Union[str, Path]) -> List[Path]:
    """``globality.csv`` and the globality figures, all or nothing."""
    from .plots import attention as fig

    rows = frame[frame["metric"].isin(GLOBALITY_METRICS)]
    with staged_outputs(out) as stage:
        write_csv(rows, stage / "globality.csv")
        from .plots import save_figure

        save_figure(fig.mad_per_layer(rows), stage, "mad_per_layer")
        save_figure(fig.mad_per_head(rows), stage, "mad_per_head")
        save_figure(fig.globality_curves(rows), stage, "globality_curves")
        names = sorted(p.name for p in stage.iterdir())
    return [Path(out) / n for n in names]


def write_entropy(frame: pd.DataFrame, out: Union[str, Path]) -> List[Path]:
    """``entropy.csv`` and the entropy figures, all or nothing."""
    from .plots import attention as fig
    from .plots import save_figure

    rows = frame[frame["metric"].isin(ENTROPY_METRICS)]
    with staged_outputs(out) as stage:
        write_csv(rows, stage / "entropy.csv")
        save_figure(fig.entropy_per_layer(rows), stage, "entropy_per_layer")
        save_figure(fig.entropy_heatmaps(rows), stage, "entropy_heatmap")
        names = sorted(p.name for p in stage.iterdir())
    return [Path(out) / n for n in names]


def layer_summary(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Model x layer table of a metric's layer value (applied attention), for the terminal."""
    d = frame[(frame["metric"] == metric) & (frame["head"] == -1) & (frame["attention"].isin(["applied", "-"]))]
    table = d.pivot_table(index="model", columns="layer", values="value", sort=False)
    table.columns = [f"L{c + 1}" for c in table.columns]
    return table
