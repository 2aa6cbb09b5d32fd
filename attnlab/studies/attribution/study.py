"""``explain``: CAMs, gradient-weighted attention, rollout and faithfulness of every model on the same images.

Every option is checked, and the images selected, before any model loads; models that
take the same input see the images decoded once.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from ...data import FileDataset
from ...devices import DeviceLike, resolve_device
from ...errors import AttnlabError
from ...paths import PathLike
from ...spec import InputSpec
from ..inputs import (ImageSelection, LoadedModel, ModelSource, check_batch_size, check_workers, group_by_input,
                      load_models, plural)
from .attention_gradients import GRADIENT_METHODS
from .cam import compute_cam
from .faithfulness import ROAD_PERCENTILES, attribution_metrics
from .layers import auto_layer, resolve_layer
from .options import (DEFAULT_FAITHFULNESS, DEFAULT_METHODS, METHODS, ROLLOUT, check_target, parse_faithfulness,
                      parse_methods, resolve_targets)
from .perturbation import DELETION_STEPS, check_deletion_steps, deletion_insertion, perturbation_curves
from .result import AttributionResult, ModelAttribution, attribution_frame
from .grid import patch_grid
from .rollout import attention_rollout, no_rollout_reason, upsample_maps

#: Images explained when ``num_images`` is not given (each one is a row of the figure).
DEFAULT_NUM_IMAGES = 8


def _in_batches(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int,
                device: torch.device) -> torch.Tensor:
    """``fn`` over ``x`` batch by batch on ``device``, concatenated, without gradients."""
    with torch.no_grad():
        return torch.cat([fn(x[s:s + batch_size].to(device)) for s in range(0, len(x), batch_size)])


def _explain_model(m: LoadedModel, x: torch.Tensor, y: np.ndarray, *, methods: List[str], target: str, layer: str,
                   batch_size: int, device: torch.device, faithfulness: Sequence[str], road_percentiles: Sequence[int],
                   deletion_steps: int, notes: List[str], log: Optional[Callable[[str], None]],
                   progress: Optional[Callable[[int], None]] = None) -> ModelAttribution:
    """One model's predictions, maps (each method and rollout) and their faithfulness (each protocol).

    ``progress(steps)`` is called after each map and each map's faithfulness (see ``steps_per_model``).
    """
    net = m.model.to(device).eval()
    steps = 0

    def step() -> None:
        nonlocal steps
        steps += 1
        if progress is not None:
            progress(steps)

    probs = _in_batches(net, x, batch_size, device).float().softmax(dim=-1).cpu().numpy()
    classes = list(m.spec.classes) or [str(i) for i in range(probs.shape[1])]
    targets = resolve_targets(target, probs.argmax(axis=1), y, classes, m.label)
    name, _ = resolve_layer(net, layer)
    if log:
        log(f"{m.label}: {plural(len(x), 'image')}, layer {name}, methods {', '.join(methods)}")
    maps: Dict[str, np.ndarray] = {}
    for method in methods:
        try:
            maps[method] = compute_cam(net, x, method, targets.tolist(), layer=name, batch_size=batch_size)
        except AttnlabError as e:
            raise AttnlabError(f"{m.label}: {e}") from (e.__cause__ or e)
        step()
        zero = int((maps[method].reshape(len(x), -1).max(axis=1) <= 0).sum())
        if zero and METHODS[method].cam_class is None:
            notes.append(f"{m.label}: {method} gave an all-zero map for {zero} of {plural(len(x), 'image')} "
                         "(no positive attention x gradient)")
        elif zero:
            notes.append(_zero_map_note(m.label, method, name, auto_layer(net), zero, len(x)))
    reason = no_rollout_reason(net)
    grid = None
    if reason is None:
        grid = _in_batches(lambda xb: attention_rollout(net, xb), x, batch_size, device)
        maps[ROLLOUT] = upsample_maps(grid, tuple(x.shape[-2:]))
    else:  # left out, not faked: the rollout column of this model stays empty
        notes.append(f"{m.label}: no attention rollout: {reason}; the rollout column is left out")
    step()
    result = ModelAttribution(label=m.label, checkpoint=m.checkpoint, arch=m.spec.arch, layer=name, classes=classes,
                              inputs=x, input_spec=m.spec.input, probabilities=probs, targets=targets, maps=maps,
                              rollout_grid=None if grid is None else grid.cpu().numpy())
    labels = y if len(y) and (y >= 0).all() else None   # top-1 of perturbed images: vs labels, else vs prediction
    grid_size = patch_grid(net, tuple(x.shape[-2:])) if "perturbation" in faithfulness else None
    for method, mp in maps.items() if faithfulness else ():
        if "road" in faithfulness:
            values = attribution_metrics(net, x, mp, targets.tolist(), road_percentiles, batch_size)
            bad = int((~np.isfinite(values["road_combined"])).sum())
            if bad:
                notes.append(f"{m.label}: ROAD undefined for {plural(bad, 'image')} with {method} "
                             "(imputation failed); left empty")
            result.metrics[method] = values
        curves = result.curves.setdefault(method, {})
        if "perturbation" in faithfulness:
            curves.update(perturbation_curves(net, x, mp, targets.tolist(), grid_size, labels,
                                              batch_size=batch_size))
        if "deletion" in faithfulness:
            curves.update(deletion_insertion(net, x, mp, targets.tolist(), deletion_steps, batch_size))
        step()
    return result


def steps_per_model(methods: Sequence[str], metrics: bool) -> int:
    """Progress steps of one model: each method's map, rollout, and (with metrics) the faithfulness of each."""
    maps = len(methods) + 1
    return 2 * maps if metrics else maps


def _gradients_possible(methods: Sequence[str]) -> None:
    """A method that backpropagates cannot run under ``torch.inference_mode``: say so before any work."""
    needing = [m for m in methods if METHODS[m].needs_gradient]
    if needing and torch.is_inference_mode_enabled():
        raise AttnlabError(f"{needing[0]} needs gradients, but torch.inference_mode is active; call explain "
                           "outside inference_mode (torch.no_grad is fine), or use eigencam / scorecam / ablationcam")


def _gradient_methods_defined(models: Sequence[LoadedModel], methods: Sequence[str]) -> None:
    """chefer / attn-grad, like rollout, need every layer over the same tokens: say so before any image is read."""
    asked = [m for m in methods if m in GRADIENT_METHODS]
    for m in models if asked else ():
        reason = no_rollout_reason(m.model)
        if reason is not None:
            raise AttnlabError(f"{m.label}: {asked[0]} is not defined for {m.spec.arch}: {reason}; "
                               "use a CAM method (gradcam, eigencam, ...)")


def _top1_note(labelled: bool) -> str:
    if labelled:
        return "perturbation curves: top-1 is checked against the dataset labels (perturbation_*_accuracy)"
    return ("perturbation curves: the images have no labels, so top-1 is checked against each image's unperturbed "
            "prediction (perturbation_*_agreement)")


def _zero_map_note(label: str, method: str, layer: str, auto: str, zero: int, n: int) -> str:
    """Why a map can be all zero, and what to try: a different layer only when it is not the automatic one."""
    head = f"{label}: {method} at {layer} gave an all-zero map for {zero} of {plural(n, 'image')} (no positive evidence"
    if layer != auto:
        return (f"{head}; with a class-token model, the last block's output gets no gradient on its patch "
                f"tokens: use --layer auto, which picks {auto})")
    return f"{head} for the explained class at this layer; another --method, e.g. gradcam++ or eigencam, may show some)"


def explain(
    models: Union[ModelSource, Sequence[ModelSource]],
    labels: Optional[Sequence[str]] = None,
    *,
    images: Optional[Sequence[PathLike]] = None,
    dataset: Optional[str] = None,
    data_dir: Optional[PathLike] = None,
    split: str = "test",
    num_images: Optional[int] = None,
    methods: Union[str, Sequence[str], None] = DEFAULT_METHODS,
    target: str = "predicted",
    layer: str = "auto",
    batch_size: int = 16,
    device: DeviceLike = "auto",
    metrics: bool = True,
    faithfulness: Union[str, Sequence[str], None] = DEFAULT_FAITHFULNESS,
    road_percentiles: Sequence[int] = ROAD_PERCENTILES,
    deletion_steps: int = DELETION_STEPS,
    model: Optional[str] = None,
    pretrained: bool = False,
    official_config: Optional[PathLike] = None,
    input_spec: Optional[InputSpec] = None,
    log: Optional[Callable[[str], None]] = None,
    progress_factory: Optional[Callable[[str, int], Callable[[int], None]]] = None,
    workers: int = 0,
) -> AttributionResult:
    """Attribution maps (each method), attention rollout and faithfulness metrics of every model on the same images.

    ``models`` are checkpoint paths, timm names (with ``pretrained``), ``(model, spec)``
    pairs or bare modules (see ``attnlab.studies.inputs.load_models``); ``target`` is
    ``predicted``, ``true`` (dataset labels) or a class name or index. ``faithfulness``: the
    protocols run when ``metrics`` is on: ``road`` (ROAD and confidence drop), ``perturbation``
    (Chefer's positive / negative curves), ``deletion`` (RISE deletion and insertion).
    ``progress_factory(label, total)`` gives each model a ``progress(steps)`` callback;
    ``workers`` processes decode the images (0: this one). It runs in one process: under
    torchrun it refuses, in one line (its outputs are per image, made together).
    """
    from ..sharding import launched_size

    if launched_size() > 1:
        raise AttnlabError(f"attnlab gradcam runs in one process, not under torchrun ({launched_size()} processes): "
                           "its maps, figure and curves are made per image, together; run it without torchrun "
                           "(--workers N decodes the images in parallel)")
    method_list = parse_methods(methods)
    protocols = parse_faithfulness(faithfulness)   # checked even when metrics is off
    protocols = protocols if metrics else ()
    if "deletion" in protocols:
        check_deletion_steps(deletion_steps)
    _gradients_possible(method_list)
    check_batch_size(batch_size)
    check_workers(workers)
    selection = ImageSelection(images=images, dataset=dataset, data_dir=data_dir, split=split,
                               num_images=num_images, default_limit=DEFAULT_NUM_IMAGES)
    target = check_target(target, selection.labelled)
    dev = resolve_device(device)
    loaded = load_models(models, labels, model=model, pretrained=pretrained, official_config=official_config,
                         input_spec=input_spec)
    _gradient_methods_defined(loaded, method_list)
    notes: List[str] = []
    steps = steps_per_model(method_list, bool(protocols))
    done: Dict[str, ModelAttribution] = {}
    true_labels: Optional[np.ndarray] = None
    for spec, group in group_by_input(loaded).items():
        who = ", ".join(m.label for m in group)
        x, y = selection.stacked(spec, workers=workers)   # decoded once for the whole group
        notes += selection.notes(spec, who)
        if true_labels is not None and len(y) != len(true_labels):
            raise AttnlabError(f"{who} read {plural(len(y), 'image')} but {loaded[0].label} read "
                               f"{len(true_labels)}; models must see the same images")
        true_labels = y.numpy() if true_labels is None else true_labels
        for m in group:
            done[m.label] = _explain_model(m, x, true_labels, methods=method_list, target=target, layer=layer,
                                           batch_size=batch_size, device=dev, faithfulness=protocols,
                                           road_percentiles=road_percentiles, deletion_steps=deletion_steps,
                                           notes=notes, log=log,
                                           progress=progress_factory(m.label, steps) if progress_factory else None)
    results = [done[m.label] for m in loaded]
    if "perturbation" in protocols:
        notes.append(_top1_note(bool(len(true_labels)) and bool((true_labels >= 0).all())))
    channels = loaded[0].spec.input.channels
    return AttributionResult(frame=attribution_frame(results), notes=notes, models=results, methods=method_list,
                             labels=true_labels, names=selection.names(channels),
                             from_files=isinstance(selection.dataset_for(channels), FileDataset))
