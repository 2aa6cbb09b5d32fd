"""``explore``: check everything, estimate the page's size, then run the models and write the page.

Order matters for bad input: options, models (capture must support each, and each runs
at its input size: one probe with a blank image reads its layers' shapes), images (loose
files must all be readable) and the size budget are all checked before the first selected
image runs, so a run that cannot succeed fails in one line, quickly, with nothing written.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from ..devices import DeviceLike, resolve_device
from ..errors import AttnlabError, plural
from ..paths import PathLike
from ..spec import InputSpec
from ..studies.inputs import ImageSelection, ModelSource, check_batch_size, group_by_input, load_models
from .budget import MB, check_budget
from .collect import ModelView, collect_model
from .page import page_data, page_title, render_page
from .plan import LayerSpec, ModelPlan, check_layer_option, plan_model, resolve_max_bytes
from .result import ExploreResult, metrics_frame

#: Images shown when ``num_images`` is not given.
DEFAULT_NUM_IMAGES = 8
MAX_BYTES = 25_000_000


def _labels_of(selection: ImageSelection, channels: int, y: torch.Tensor) -> List[Optional[str]]:
    """Each image's true class name (datasets), or None (loose files, label -1)."""
    classes = [str(c) for c in (getattr(selection.dataset_for(channels), "classes", None) or [])]
    return [None if t < 0 else classes[t] if t < len(classes) else str(t) for t in y.tolist()]


def _check_readable(selection: ImageSelection, channels: int) -> None:
    """Loose ``--images`` were named to be looked at: an unreadable one is an error, not a note."""
    ds = selection.dataset_for(channels)
    if selection.images is not None and ds.unreadable:
        raise AttnlabError(f"cannot read {plural(len(ds.unreadable), 'image file')} (e.g. {ds.unreadable[0]}); "
                           "fix or remove them, or pass other --images")


def explore(
    models: Union[ModelSource, Sequence[ModelSource]],
    labels: Optional[Sequence[str]] = None,
    *,
    images: Optional[Sequence[PathLike]] = None,
    dataset: Optional[str] = None,
    data_dir: Optional[PathLike] = None,
    split: str = "test",
    num_images: Optional[int] = None,
    layers: LayerSpec = None,
    device: DeviceLike = "auto",
    model: Optional[str] = None,
    pretrained: bool = False,
    official_config: Optional[PathLike] = None,
    input_spec: Optional[InputSpec] = None,
    max_bytes: int = MAX_BYTES,
    batch_size: int = 8,
    log: Optional[Callable[[str], None]] = None,
) -> ExploreResult:
    """The interactive explorer of every model on the same images, as one self-contained HTML page.

    ``models`` are checkpoint paths, timm names (with ``pretrained``), ``(model, spec)``
    pairs or bare modules (``attnlab.studies.inputs.load_models``), of any family capture
    supports; ``layers`` are the attention layers (forward order) whose per-head attention
    the page stores (default: first, middle, last).
    Refuses, before running any model, a page estimated over ``max_bytes``.
    """
    budget = resolve_max_bytes(max_bytes)
    check_batch_size(batch_size)
    check_layer_option(layers)
    selection = ImageSelection(images=images, dataset=dataset, data_dir=data_dir, split=split,
                               num_images=num_images, default_limit=DEFAULT_NUM_IMAGES)
    dev = resolve_device(device)
    loaded = load_models(models, labels, model=model, pretrained=pretrained, official_config=official_config,
                         input_spec=input_spec)
    plans = [plan_model(m, layers) for m in loaded]
    groups = group_by_input(loaded)
    counts: Dict[str, int] = {}
    for spec in groups:
        _check_readable(selection, spec.channels)
        counts[", ".join(m.label for m in groups[spec])] = len(selection.dataset_for(spec.channels))
    if len(set(counts.values())) > 1:
        raise AttnlabError(f"the models read different numbers of images ({counts}); models must see the same images")
    n = next(iter(counts.values()))
    estimate = check_budget(plans, n, budget)
    if log:
        log(f"explore: {plural(len(plans), 'model')}, {plural(n, 'image')}, page about {estimate / MB:.1f} MB")
    views, pictures, picture_of, y, notes = _collect(plans, selection, groups, dev, batch_size)
    channels = loaded[0].spec.input.channels
    names = selection.names(channels)
    image_labels = _labels_of(selection, channels, y)
    data = page_data(views, pictures, picture_of, names, image_labels)
    page = render_page(data, page_title([p.label for p in plans]))
    size = len(page.encode("utf-8"))
    if size > budget:
        raise AttnlabError(f"explore.html came out at {size / MB:.1f} MB, over the {budget / MB:g} MB budget; pass "
                           "fewer --num-images or --layers, or raise --max-mb")
    return ExploreResult(frame=metrics_frame(views), notes=notes, page=page, views=views, names=names,
                         labels=image_labels)


def _collect(plans: Sequence[ModelPlan], selection: ImageSelection, groups, dev: torch.device,
             batch_size: int) -> Tuple[List[ModelView], List, List[int], torch.Tensor, List[str]]:
    """Every model's view; the images decoded once per input (``pictures``), which each model sees, the labels."""
    by_label = {p.label: p for p in plans}
    done: Dict[str, ModelView] = {}
    pictures: List = []
    labels = torch.empty(0, dtype=torch.int64)
    picture_at: Dict[str, int] = {}
    notes: List[str] = []
    for spec, group in groups.items():
        pixels, labels = selection.stacked(spec, pixel=True)   # [n, C, h, w] in [0, 1], decoded once for the group
        notes += selection.notes(spec, ", ".join(m.label for m in group))
        pictures.append(pixels.numpy())
        for m in group:
            picture_at[m.label] = len(pictures) - 1
            done[m.label] = collect_model(by_label[m.label], pixels, dev, batch_size)
    return [done[p.label] for p in plans], pictures, [picture_at[p.label] for p in plans], labels, notes
