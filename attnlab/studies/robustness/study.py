"""The robustness study behind ``attnlab robustness``, as a Python API.

    result = measure_robustness(["vit.pt", "revit.pt"], dataset="fashion-mnist")
    result.frame                       # tidy rows (attnlab.tables schema)
    result.figures()                   # {"robustness_shift-h": Figure, ...}
    result.save("out/robustness")      # robustness.csv + figures, all or nothing

Models that take the same input share every decoded batch: each image is read and
prepared once per input spec, then each model runs all its conditions on it.
"""
from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import pandas as pd

from ...errors import AttnlabError
from ...paths import PathLike
from ...spec import InputSpec
from ..inputs import (ImageSelection, LoadedModel, ModelSource, check_batch_size, check_choice, check_class_names,
                      check_num_images, check_workers, group_by_input, load_models)
from ..result import FigureMaker, StudyResult
from .conditions import DIRECTIONS, PROTOCOLS, Condition, check_scales, check_shifts, conditions_for
from .run import RobustnessRun
from .statistics import summarise
from .transforms import FILLS

DEFAULT_SHIFTS = (0, 2, 4, 8, 16)
DEFAULT_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5)
ATTENTION_METRICS = ("mad_px", "entropy", "entropy_norm")

ProgressFactory = Callable[[str, int], Callable[[int], None]]


def figure_stem(transform: str) -> str:
    """``robustness_shift-h``; a fill suffix becomes part of the name: ``robustness_shift-h-reflect``."""
    return "robustness_" + transform.replace(":", "-")


def _is_grid(transform: str) -> bool:
    return transform.split(":")[0] == "shift-grid"


@dataclass
class RobustnessResult(StudyResult):
    """robustness.csv and its figures: metrics against each transform's magnitude, the
    (dx, dy) heatmap of a grid sweep, and attention under the transform (``attention=True``).
    ``chance``: 1 / the number of classes, when all models have the same, drawn on accuracy panels."""

    chance: Optional[float] = None

    def tables(self) -> Dict[str, pd.DataFrame]:
        return {"robustness.csv": self.frame}

    def figure_makers(self) -> Dict[str, FigureMaker]:
        from ...plots import robustness as fig

        frame = self.frame
        transforms = set(frame["transform"])
        lines = sorted(t for t in transforms if t.startswith("shift-") and not _is_grid(t))
        lines += [t for t in ("random-translate",) if t in transforms]
        makers: Dict[str, FigureMaker] = {figure_stem(t): partial(fig.against_magnitude, frame, t, chance=self.chance)
                                          for t in lines}
        if "two-crops" in transforms:
            makers[figure_stem("two-crops")] = partial(fig.two_crops, frame)
        for t in sorted(t for t in transforms if _is_grid(t)):
            makers[figure_stem(t)] = partial(fig.shift_grid, frame, transform=t)
        if "scale" in transforms:
            makers["robustness_scale"] = partial(fig.against_magnitude, frame, "scale", chance=self.chance)
        if (frame["metric"] == "mad_px").any():
            makers["attention_under_transform"] = partial(fig.attention_under_transform, frame)
        return makers

    def owned_patterns(self) -> List[str]:
        return ["robustness.csv", "robustness_*.png", "robustness_*.pdf", "attention_under_transform.*"]


def write_robustness(frame_or_result: Union[pd.DataFrame, StudyResult], out: PathLike) -> List[Path]:
    """``robustness.csv`` and its figures into ``out``, all or nothing (a frame or a result)."""
    result = frame_or_result
    if not isinstance(result, RobustnessResult):
        frame = result.frame if isinstance(result, StudyResult) else result
        result = RobustnessResult(frame)
    return result.save(out)


def _label_use(m: LoadedModel, selection: ImageSelection, ignore_class_names: bool) -> Tuple[bool, Optional[str]]:
    """Whether ``m`` is scored against the labels, and if not, the note that says why."""
    if not selection.labelled:
        return False, None  # one note for the whole run
    classes = selection.dataset_for(m.spec.input.channels).classes
    if not ignore_class_names:
        check_class_names(m.spec.classes, classes, m.label, f"dataset {selection.dataset}")
    n_classes = len(classes)
    if n_classes != m.spec.num_classes:
        return False, (f"dataset {selection.dataset} has {n_classes} classes but {m.label} predicts "
                       f"{m.spec.num_classes}: accuracy needs the model's labels; reporting consistency, "
                       "prob_change (of the unshifted image's top-1 class) and js_divergence")
    return True, None


def _model_frame(m: LoadedModel, run: RobustnessRun, n_boot: int, seed: int) -> pd.DataFrame:
    """Tidy rows of one model: the metrics of every condition, then its attention per condition."""
    frames = [summarise(run.outcomes(), m.label, m.checkpoint, m.spec.arch, n_boot=n_boot, seed=seed)]
    if run.attention_stats:
        att = run.attention_frame(m.label, m.checkpoint)
        att["arch"] = m.spec.arch
        frames.append(att)
    return pd.concat(frames, ignore_index=True)


def measure_robustness(
    models: Union[ModelSource, Sequence[ModelSource]],
    labels: Optional[Sequence[str]] = None,
    *,
    images: Optional[Sequence[PathLike]] = None,
    dataset: Optional[str] = None,
    data_dir: Optional[PathLike] = None,
    split: str = "test",
    num_images: Optional[int] = None,
    shifts: Sequence[int] = DEFAULT_SHIFTS,
    scales: Sequence[float] = DEFAULT_SCALES,
    direction: str = "h",
    fill: str = "black",
    protocol: str = "sweep",
    seed: int = 0,
    batch_size: int = 64,
    device: Optional[str] = "auto",
    attention: bool = False,
    n_boot: int = 1000,
    model: Optional[str] = None,
    pretrained: bool = False,
    official_config: Optional[PathLike] = None,
    input_spec: Optional[InputSpec] = None,
    progress_factory: Optional[ProgressFactory] = None,
    ignore_class_names: bool = False,
    workers: int = 0,
) -> RobustnessResult:
    """Accuracy, consistency, probability change and JS divergence under shifts and scales.

    ``models``: checkpoint paths, timm names (``pretrained``), ``(model, spec)`` pairs or
    modules (``input_spec``). Images: loose files (``images``) or a dataset split, decoded
    by ``workers`` processes (0: this one).

    A model without labels it can be scored against (loose images, or a dataset whose
    number of classes is not the model's) gets the label-free metrics only: consistency,
    js_divergence, and prob_change measured on the unshifted image's top-1 class instead
    of its label; a note says that accuracy needs labels. ``fill`` (sweep only) is recorded
    in the ``transform`` column (``shift-h:reflect``); black keeps the plain name.

    Under torchrun each process runs its share of the images (the random protocols draw
    as one process would) and every process returns the result of all of them, with the
    same bootstrap intervals (``attnlab.studies.sharding``).
    """
    from ...devices import resolve_device
    from ...tables import tidy
    from ..sharding import current_world

    world = current_world(device)

    def measure() -> Tuple[List[LoadedModel], Dict[str, RobustnessRun], List[str]]:
        """Check every option, load the models and run this process's share of the images."""
        check_batch_size(batch_size)
        check_num_images(num_images)
        check_workers(workers)
        check_choice(fill, FILLS, "--fill")
        check_choice(protocol, PROTOCOLS, "--protocol")
        check_choice(direction, DIRECTIONS, "--direction")
        check_scales(scales, "--scales")
        check_shifts(shifts)
        if protocol != "consistency" and not list(shifts) and not list(scales):
            raise AttnlabError("nothing to measure: --shifts and --scales are both empty; give at least one of them")
        if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
            raise AttnlabError(f"n_boot must be a whole number of at least 1, not {n_boot}")
        dev = resolve_device(device, world.local_rank)
        selection = ImageSelection(images=images, dataset=dataset, data_dir=data_dir, split=split,
                                   num_images=num_images, default_limit=512)
        loaded = load_models(models, labels, model=model, pretrained=pretrained, official_config=official_config,
                             input_spec=input_spec)
        # every model's conditions before any image is read: a shift too large for one input fails the run at once
        conditions: Dict[str, List[Condition]] = {
            m.label: conditions_for(protocol, shifts, scales, direction, fill, tuple(m.spec.input.size)) for m in loaded}
        label_use = {m.label: _label_use(m, selection, ignore_class_names) for m in loaded}  # class names checked here

        notes: List[str] = []
        if fill != "black" and protocol != "sweep":
            notes.append(f"--fill {fill} applies to --protocol sweep only; {protocol} shifts fill black")
        if not selection.labelled:
            notes.append("the images have no labels: accuracy needs labels; reporting consistency, "
                         "prob_change (of the unshifted image's top-1 class) and js_divergence")
        runs: Dict[str, RobustnessRun] = {}
        for spec, group in group_by_input(loaded).items():
            notes += selection.notes(spec, ", ".join(m.label for m in group))
            total = len(selection.dataset_for(spec.channels))
            n = sum(len(b) for b in world.batches(total, batch_size))
            for m in group:
                use_labels, note = label_use[m.label]
                notes += [note] if note else []
                runs[m.label] = RobustnessRun(m.model, spec, conditions[m.label], protocol=protocol, seed=seed,
                                              max_batch=batch_size, device=dev,
                                              attention_metrics=ATTENTION_METRICS if attention else (),
                                              use_labels=use_labels, label=m.label,
                                              progress=progress_factory(m.label, n) if progress_factory else None)
                runs[m.label].skip(world.batches_before(total, batch_size), batch_size)  # the draws of earlier ranks
            with closing(selection.batches(spec, batch_size, pixel=True, workers=workers, world=world,
                                           pin_memory=dev.type == "cuda", device=dev)) as batches:  # closed at once on error
                for batch, batch_labels in batches:  # decoded once per group
                    for m in group:
                        runs[m.label].update(batch, batch_labels)
        return loaded, runs, notes

    loaded, runs, notes = world.run(measure)
    for m in loaded:  # the same order on every rank
        runs[m.label].merge(world)

    def summarise_all() -> RobustnessResult:
        rows = pd.concat([_model_frame(m, runs[m.label], n_boot, seed) for m in loaded],
                         ignore_index=True)  # in the order the models were given
        counts = {m.spec.num_classes for m in loaded}
        chance = 1.0 / counts.pop() if len(counts) == 1 and min(counts | {1}) > 0 else None
        return RobustnessResult(tidy(rows), notes, chance=chance)

    return world.run(summarise_all)
