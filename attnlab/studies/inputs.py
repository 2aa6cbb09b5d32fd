"""What every study takes: models (from any source) and a selection of images, each checked once.

    models = load_models(["vit.pt", (net, spec), timm_module], labels=["ViT", "mine", "timm"])
    selection = ImageSelection(dataset="fashion-mnist", num_images=256)
    for spec, group in group_by_input(models).items():
        for images, labels in selection.batches(spec, batch_size=64):
            ...   # every model of the group sees the same decoded batch

A model source is a checkpoint path, a timm model name (with ``pretrained=True``), a
``(model, spec)`` pair as ``load_model`` returns it, a bare ``nn.Module`` (its input spec
read from its pretrained config, or ``input_spec=``), or an already ``LoadedModel``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..errors import AttnlabError, plural  # noqa: F401  (plural: re-exported for the studies)
from ..paths import PathLike
from ..spec import InputSpec, ModelSpec

if TYPE_CHECKING:  # pragma: no cover
    from .sharding import World

ModelSource = Union[PathLike, nn.Module, Tuple[nn.Module, ModelSpec], "LoadedModel"]

#: Images a study uses when ``num_images`` is not given (GradCAM draws each image: fewer).
DEFAULT_NUM_IMAGES = 512


# ----------------------------------------------------------------------------- options

def check_batch_size(batch_size: int) -> int:
    """``--batch-size`` must be a whole number >= 1."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise AttnlabError(f"--batch-size must be at least 1, not {batch_size}")
    return batch_size


def check_num_images(num_images: Optional[int]) -> Optional[int]:
    """``--num-images`` is None (the study's default) or a whole number >= 1."""
    if num_images is None:
        return None
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise AttnlabError(f"--num-images must be at least 1, not {num_images}")
    return num_images


def check_workers(workers: int) -> int:
    """``--workers`` is a whole number >= 0 (0: images are decoded in the main process)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise AttnlabError(f"--workers must be 0 or more, not {workers}")
    return workers


def check_choice(value: str, choices: Sequence[str], option: str) -> str:
    """``value`` must be one of ``choices``; the error names the option and lists them."""
    if value not in choices:
        raise AttnlabError(f"unknown {option} {value!r}; choose one of {', '.join(choices)}")
    return value


# ----------------------------------------------------------------------------- models

@dataclass
class LoadedModel:
    """A model ready for a study: its label in tables and legends, the module, its spec, and
    ``checkpoint``: the short sha256 of its file, ``timm:<name>``, or ``module:<arch>``."""

    label: str
    model: nn.Module
    spec: ModelSpec
    checkpoint: str


def spec_of_module(net: nn.Module, input_spec: Optional[InputSpec] = None) -> ModelSpec:
    """A spec for a module built in Python: arch and input from its timm config (``input_spec`` overrides)."""
    from ..checkpoint import default_classes, default_input_spec

    cfg = getattr(net, "pretrained_cfg", None) or {}
    arch = str(cfg.get("architecture") or type(net).__name__)
    if input_spec is None:
        if not cfg:  # not a timm model: nothing says what input it takes
            raise AttnlabError(f"cannot tell what input {arch} takes (it has no timm pretrained_cfg); "
                               "pass input_spec=InputSpec(size=..., channels=..., mean=..., std=...)")
        input_spec = default_input_spec(net)
    return ModelSpec(arch=arch, options=dict(getattr(net, "_model_args", None) or {}), input=input_spec,
                     classes=default_classes(net), source=f"module:{arch}", kind="module")


def _load_one(source: ModelSource, *, model: Optional[str], pretrained: bool,
              official_config: Optional[PathLike], input_spec: Optional[InputSpec]) -> Tuple[nn.Module, ModelSpec, str, str]:
    """(module, spec, default label, checkpoint id) of one source."""
    from ..checkpoint import file_sha256, load_model

    if isinstance(source, LoadedModel):
        return source.model, source.spec, source.label, source.checkpoint
    if isinstance(source, tuple) and len(source) == 2 and isinstance(source[0], nn.Module) \
            and isinstance(source[1], ModelSpec):
        net, spec = source
        return net, spec, spec.arch, f"module:{spec.arch}"
    if isinstance(source, nn.Module):
        spec = spec_of_module(source, input_spec)
        return source, spec, spec.arch, f"module:{spec.arch}"
    if not isinstance(source, (str, Path)) and not hasattr(source, "__fspath__"):
        raise AttnlabError(f"a model source is a checkpoint path, a timm name, a (model, spec) pair or an "
                           f"nn.Module, not {type(source).__name__}")
    net, spec = load_model(source, model=model, pretrained=pretrained, official_config=official_config)
    path = Path(source)
    if path.is_file():
        return net, spec, path.stem, file_sha256(path)
    if spec.kind == "hf":  # hf:DIR_OR_ID or a save_pretrained folder
        return net, spec, Path(spec.source).name or spec.source, f"hf:{spec.source}"
    return net, spec, str(source), f"timm:{source}"


def load_models(
    sources: Union[ModelSource, Sequence[ModelSource]],
    labels: Optional[Sequence[str]] = None,
    *,
    model: Optional[str] = None,
    pretrained: bool = False,
    official_config: Optional[PathLike] = None,
    input_spec: Optional[InputSpec] = None,
) -> List[LoadedModel]:
    """Load every source with a label (``labels``, else the file name or arch, made unique)."""
    if isinstance(sources, (str, Path, nn.Module, LoadedModel)) or hasattr(sources, "__fspath__") or (
            isinstance(sources, tuple) and len(sources) == 2 and isinstance(sources[0], nn.Module)):
        sources = [sources]
    sources = list(sources or [])
    if not sources:
        raise AttnlabError("no checkpoint given; pass --ckpt FILE (once per model)")
    if labels and len(labels) != len(sources):
        raise AttnlabError(f"{len(labels)} --label values for {len(sources)} --ckpt values; "
                           "give one label per checkpoint")
    out: List[LoadedModel] = []
    seen: Dict[str, int] = {}
    for i, source in enumerate(sources):
        net, spec, default_label, ident = _load_one(source, model=model, pretrained=pretrained,
                                                    official_config=official_config, input_spec=input_spec)
        label = labels[i] if labels else default_label
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label}-{seen[label]}"
        out.append(LoadedModel(label, net, spec, ident))
    return out


def group_by_input(models: Sequence[LoadedModel]) -> Dict[InputSpec, List[LoadedModel]]:
    """Models that take the same input, in order: each group's images are decoded once."""
    groups: Dict[InputSpec, List[LoadedModel]] = {}
    for m in models:
        groups.setdefault(m.spec.input, []).append(m)
    return groups


# ----------------------------------------------------------------------------- images

@dataclass
class ImageSelection:
    """Which images a study reads: loose files (``images``) or a dataset split, and how many.

    Checked when made. ``num_images`` None means up to ``default_limit`` (the study's
    default; None: every image); a dataset stored class by class then takes the classes in turn.
    """

    images: Optional[Sequence[PathLike]] = None
    dataset: Optional[str] = None
    data_dir: Optional[PathLike] = None
    split: str = "test"
    num_images: Optional[int] = None
    default_limit: Optional[int] = DEFAULT_NUM_IMAGES
    _raw: Dict[int, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.images is not None and not isinstance(self.images, (list, tuple)):
            self.images = [self.images]  # one path
        if self.images is not None and len(self.images) == 0:
            self.images = None
        if (self.images is None) == (self.dataset is None):
            raise AttnlabError("pass either --images PATH... or --dataset NAME (with --data-dir DIR), "
                               "not both or neither")
        check_num_images(self.num_images)

    @property
    def labelled(self) -> bool:
        """Whether the images carry labels (a dataset does; loose files do not)."""
        return self.dataset is not None

    def dataset_for(self, channels: int):
        """The selected images in ``channels`` (1 or 3) as PIL images, read once per channel count."""
        if channels not in self._raw:
            from ..data import load_dataset
            from ..data.base import SubsetTooLarge
            from ..data.files import load_image_files

            def load(subset: Optional[int]):  # noqa: ANN202
                if self.images is not None:
                    return load_image_files(self.images, channels=channels, subset=subset)
                return load_dataset(self.dataset, split=self.split, data_dir=self.data_dir, channels=channels,
                                    subset=subset)

            want = self.num_images if self.num_images is not None else self.default_limit
            try:  # a file dataset then checks only the files it takes, not a whole ImageNet split
                ds = load(want) if want is not None else None
            except SubsetTooLarge:  # fewer than asked for: read them all, to say how many there are
                ds = None
            if ds is None:
                ds = load(None)
                if self.num_images is not None and self.num_images > len(ds):
                    raise AttnlabError(f"--num-images {self.num_images} is more than the {len(ds)} images "
                                       f"available; pass --num-images {len(ds)} or fewer")
                ds = ds.subset(self.count(len(ds)))
            self._raw[channels] = (ds.found if ds.found is not None else len(ds), ds)
        return self._raw[channels][1]

    def available(self, channels: int) -> int:
        """How many images there are before the selection takes its share."""
        self.dataset_for(channels)
        return self._raw[channels][0]

    def count(self, available: int) -> int:
        """How many of ``available`` images the selection takes."""
        if self.num_images is not None:
            return self.num_images
        return available if self.default_limit is None else min(available, self.default_limit)

    def open(self, spec: InputSpec, *, pixel: bool = False):
        """The selected images prepared for ``spec``: normalised tensors, or in [0, 1] with ``pixel``."""
        from ..data import eval_transform, pixel_transform

        ds = self.dataset_for(spec.channels)
        return ds.with_transform(pixel_transform(spec) if pixel else eval_transform(spec))

    def batches(self, spec: InputSpec, batch_size: int, *, pixel: bool = False, workers: int = 0,
                world: Optional["World"] = None, pin_memory: bool = False,
                device: Optional[torch.device] = None) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """``(images, labels)`` batches in a fixed order (labels -1 for loose files), the same values
        as :meth:`open` gives image by image.

        ``workers`` processes decode the images (a torch DataLoader; 0: this process): the
        batches are the same for any number. ``world`` (``attnlab.studies.sharding``) takes
        this rank's share only: a contiguous run of the same batches one process would make.
        The images travel as uint8 and become floats on ``device`` (default: here), a quarter
        of the bytes through the workers' shared memory and to the GPU.
        """
        from ..data.transforms import to_model_input, uint8_transform
        from ..data.workers import drain
        from .sharding import World

        ds = self.dataset_for(spec.channels).with_transform(uint8_transform(spec))
        plan = (world or World()).batches(len(ds), check_batch_size(batch_size))
        loader = torch.utils.data.DataLoader(ds, batch_sampler=plan, num_workers=min(check_workers(workers), len(plan)),
                                             pin_memory=pin_memory)
        batches = drain(loader)  # a worker's error as its one line
        try:
            for x, y in batches:
                x = x if device is None else x.to(device, non_blocking=True)
                yield to_model_input(x, spec, pixel), y
        finally:
            batches.close()  # workers stopped when we stop

    def stacked(self, spec: InputSpec, *, pixel: bool = False, workers: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
        """All selected images as one ``[n, C, H, W]`` tensor and their labels (for small selections)."""
        parts = list(self.batches(spec, 64, pixel=pixel, workers=workers))
        if not parts:
            raise AttnlabError("no images selected")
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]).to(torch.int64)

    def names(self, channels: int) -> List[str]:
        """Each selected image's file path (loose files, image folders) or ``split/index``."""
        ds = self.dataset_for(channels)
        samples = getattr(ds, "samples", None)
        if samples:
            return [str(p) for p, _ in samples]
        return [f"{ds.split}/{i}" for i in range(len(ds))]

    def notes(self, spec: InputSpec, who: str) -> List[str]:
        """What happened to the data on the way in: how many were taken, conversions, skipped files."""
        ds = self.dataset_for(spec.channels)
        out = []
        total = self._raw[spec.channels][0]
        if self.num_images is None and len(ds) < total:
            how = "taking the classes in turn" if getattr(ds, "class_ordered", False) else "the first ones"
            out.append(f"{who}: using {len(ds)} of the {total} images ({how}); pass --num-images for more")
        if ds.conversions:
            what = ", ".join(f"{k} x{v}" for k, v in sorted(ds.conversions.items()))
            out.append(f"{who}: converted images to the model's {spec.channels}-channel input ({what})")
        if ds.unreadable:
            out.append(f"{who}: skipped {len(ds.unreadable)} unreadable image files (e.g. {ds.unreadable[0]})")
        if getattr(ds, "ignored", None):
            out.append(f"{who}: ignored {len(ds.ignored)} files that are not images (e.g. {ds.ignored[0]})")
        return out


def check_class_names(model_classes: Sequence[str], data_classes: Sequence[str], who: str, data: str) -> None:
    """A model scored against a dataset's labels must name the same classes in the same order.

    Models without class names (``0``, ``1``, ... as a bare module has) are not checked; a
    different count is the caller's to handle. Pass ``ignore_class_names`` (the commands'
    ``--ignore-class-names``) for data relabelled on purpose.
    """
    model_classes, data_classes = [str(c) for c in model_classes], [str(c) for c in data_classes]
    if model_classes == [str(i) for i in range(len(model_classes))] or len(model_classes) != len(data_classes):
        return
    differ = [i for i, (a, b) in enumerate(zip(model_classes, data_classes)) if a != b]
    if differ:
        i = differ[0]
        raise AttnlabError(f"{who} names other classes than {data}: class {i} is {model_classes[i]!r} for the model "
                           f"but {data_classes[i]!r} in the data ({len(differ)} of {len(data_classes)} differ); "
                           "use the dataset it was trained on, or pass --ignore-class-names for relabelled data")
