"""``attnlab similarity``: how alike the block outputs are, within a model and between models,
and what each block already predicts (the logit lens).

    result = measure_similarity(["vit.pt", "revit.pt"], ["ViT", "ReViT"], dataset="cifar10")
    result.cka_matrix("ViT", "ReViT")   # blocks of ViT x blocks of ReViT
    result.save("out/similarity")       # similarity.csv + cka_within, cka_between, logit_lens figures

Linear CKA (``attnlab.metrics.similarity``) compares every pair of block outputs
(``blocks.{i}.resid_post``) on the same images: ``tokens="cls"`` the class token,
``"mean"`` the mean of the patch tokens, ``"patches"`` all patch tokens (each image's
``G x C`` tokens flattened into one feature vector). It is the minibatch CKA of Nguyen,
Raghu & Kornblith (2021): the unbiased HSIC of each minibatch's Gram matrices, averaged
over minibatches (each weighing the same), so memory does not grow with the number of
images; a last minibatch of fewer than 4 images is left out (a note says so).

The logit lens applies the model's own final norm and head to each block's output,
``model.forward_head(model.norm(x_i))`` (timm's pooling: the class token or the mean of
the patch tokens, whatever ``tokens`` is), so the last block gives the model's output.
Its top-1 accuracy against the labels is ``logit_lens_top1``; without labels (loose
images, or a dataset with another number of classes) it is ``logit_lens_agreement``,
the share of images whose prediction equals the model's final prediction.

Rows of ``similarity.csv`` (``attnlab.tables`` schema): ``model`` is ``A`` for CKA within
model A and ``A|B`` between A and B (``checkpoint`` and ``arch`` likewise); ``layer`` is
the block of the first model, ``head`` the block of the second (both 0-based; the
logit lens has ``head = -1``); ``transform`` is the tokens compared (``cls``, ``mean``,
``patches``; ``none`` for the logit lens); ``n_images`` the images behind the value.
"""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import pandas as pd
import torch

from ..capture import hook_point_names, hooks
from ..devices import DeviceLike, resolve_device
from ..errors import AttnlabError, plural
from ..layout import TokenLayout
from ..metrics.similarity import MIN_BATCH, MinibatchCKA, gram_linear
from ..paths import PathLike
from ..spec import InputSpec
from .inputs import (ImageSelection, LoadedModel, ModelSource, check_batch_size, check_choice, check_class_names,
                     group_by_input, load_models)
from .result import FigureMaker, StudyResult

TOKEN_CHOICES = ("cls", "mean", "patches")
ProgressFactory = Callable[[str, int], Callable[[int], None]]


@dataclass
class SimilarityResult(StudyResult):
    """``similarity.csv`` (CKA and the logit lens) and its figures."""

    def tables(self) -> Dict[str, pd.DataFrame]:
        return {"similarity.csv": self.frame}

    def figure_makers(self) -> Dict[str, FigureMaker]:
        from ..plots import similarity as fig

        cka = self.frame[self.frame["metric"] == "cka"]
        out: Dict[str, FigureMaker] = {"cka_within": lambda: fig.cka_heatmaps(self.frame)}
        if cka["model"].str.contains("|", regex=False).any():
            out["cka_between"] = lambda: fig.cka_heatmaps(self.frame, pairs=True)
        if self.frame["metric"].str.startswith("logit_lens").any():
            out["logit_lens"] = lambda: fig.logit_lens(self.frame)
        return out

    def owned_patterns(self) -> List[str]:
        return ["similarity.csv", "cka_within.*", "cka_between.*", "logit_lens.*"]

    def cka_matrix(self, first: str, second: Optional[str] = None) -> pd.DataFrame:
        """Block x block CKA of model ``first`` with itself, or with model ``second`` (rows: ``first``'s blocks)."""
        key = first if second is None or second == first else f"{first}|{second}"
        d = self.frame[(self.frame["metric"] == "cka") & (self.frame["model"] == key)]
        if d.empty:
            raise AttnlabError(f"no CKA of {key!r} in this result; models: {', '.join(self.models())}")
        return d.pivot(index="layer", columns="head", values="value")

    def models(self) -> List[str]:
        return [m for m in self.frame["model"].unique() if "|" not in m]


def _representation(t: torch.Tensor, layout: TokenLayout, tokens: str) -> torch.Tensor:
    """The features CKA compares of a block output ``[B, N, C]``: ``[B, C]``, or ``[B, G, C]`` for patches."""
    p = layout.num_prefix_tokens
    if tokens == "cls":
        return t[:, 0]
    return t[:, p:].mean(1) if tokens == "mean" else t[:, p:]


class SimilarityStream:
    """Block outputs of several models, fed the same batches: minibatch CKA of every pair of
    blocks (within and between models) and the logit lens. Use as a context manager (hooks)."""

    def __init__(self, models: Sequence[LoadedModel], *, tokens: str = "cls", device: DeviceLike = None,
                 logit_lens: bool = True, use_labels: Optional[Dict[str, bool]] = None) -> None:
        check_choice(tokens, TOKEN_CHOICES, "--tokens")
        self.device = resolve_device(device)
        self.models = list(models)
        self.tokens = tokens
        self.layers = [[int(n.split(".")[1]) for n in hook_point_names(m.model) if n.endswith(".resid_post")]
                       for m in self.models]
        for m in self.models:
            m.model.to(self.device).eval()
            if tokens == "cls" and getattr(m.model, "cls_token", None) is None:
                raise AttnlabError(f"--tokens cls: {m.label} has no class token; use --tokens mean or patches")
        self.without_head = [m.label for m in self.models
                             if logit_lens and not (hasattr(m.model, "forward_head") and hasattr(m.model, "norm"))]
        self.lens = [logit_lens and m.label not in self.without_head for m in self.models]
        self.use_labels = dict(use_labels or {})
        self.cka = MinibatchCKA()
        self.correct = [torch.zeros(len(layers), dtype=torch.int64) for layers in self.layers]
        self.n_images = 0          # every image (the logit lens)
        self.left_out = 0          # images of minibatches too small for the unbiased HSIC
        self._grams: List[Dict[int, torch.Tensor]] = [{} for _ in self.models]
        self._preds: List[Dict[int, torch.Tensor]] = [{} for _ in self.models]
        self._layout: Optional[TokenLayout] = None
        self._stack: Optional[ExitStack] = None

    def _sink(self, k: int, name: str, t: torch.Tensor) -> None:
        layer = int(name.split(".")[1])
        self._grams[k][layer] = gram_linear(_representation(t, self._layout, self.tokens))  # [B, B] float64
        if self.lens[k]:
            net = self.models[k].model
            self._preds[k][layer] = net.forward_head(net.norm(t)).argmax(-1)  # the final norm and head on block i

    def __enter__(self) -> "SimilarityStream":
        self._stack = ExitStack()
        for k, m in enumerate(self.models):
            sink = (lambda k: lambda name, t: self._sink(k, name, t))(k)
            self._stack.enter_context(hooks(m.model, "blocks.*.resid_post", sink))
        return self

    def __exit__(self, *exc: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.__exit__(*exc)

    def update(self, x: torch.Tensor, labels: Optional[torch.Tensor] = None) -> None:
        """One batch of model inputs ``[B, C, H, W]`` (and its labels) through every model."""
        if self._stack is None:
            raise RuntimeError("SimilarityStream.update runs inside `with stream:` (the hooks are set there)")
        x = x.to(self.device, non_blocking=True)
        grams = []
        for k, m in enumerate(self.models):
            self._layout = TokenLayout.from_model(m.model, tuple(x.shape[-2:]))
            with torch.inference_mode():
                final = m.model(x).argmax(-1)
            grams += [self._grams[k].pop(i) for i in self.layers[k]]
            if self.lens[k]:
                target = labels.to(final.device) if self.use_labels.get(m.label) and labels is not None else final
                hits = torch.stack([self._preds[k].pop(i) == target for i in self.layers[k]]).sum(-1)
                self.correct[k] += hits.cpu()
        self.n_images += x.shape[0]
        if x.shape[0] >= MIN_BATCH:
            self.cka.update(torch.stack(grams))  # every block of every model: one [S, S] HSIC per minibatch
        else:
            self.left_out += x.shape[0]

    def frame(self) -> pd.DataFrame:
        """Tidy rows: CKA of every pair of blocks (within each model, then each pair), then the logit lens."""
        from ..tables import tidy

        if self.cka.n_batches == 0:
            raise AttnlabError(f"CKA needs a minibatch of at least {MIN_BATCH} images; got {self.n_images}")
        cka = self.cka.cka().numpy()
        offsets = [0]
        for layers in self.layers:
            offsets.append(offsets[-1] + len(layers))
        rows = []
        for a, ma in enumerate(self.models):
            for b in range(a, len(self.models)):
                mb = self.models[b]
                ident = {"model": ma.label, "checkpoint": ma.checkpoint, "arch": ma.spec.arch} if a == b else {
                    "model": f"{ma.label}|{mb.label}", "checkpoint": f"{ma.checkpoint}|{mb.checkpoint}",
                    "arch": f"{ma.spec.arch}|{mb.spec.arch}"}
                for i, li in enumerate(self.layers[a]):
                    for j, lj in enumerate(self.layers[b]):
                        rows.append({**ident, "transform": self.tokens, "layer": li, "head": lj, "metric": "cka",
                                     "value": float(cka[offsets[a] + i, offsets[b] + j]),
                                     "n_images": self.cka.n_images})
        n = self.n_images
        for k, m in enumerate(self.models):
            if not self.lens[k]:
                continue
            metric = "logit_lens_top1" if self.use_labels.get(m.label) else "logit_lens_agreement"
            for i, layer in enumerate(self.layers[k]):
                p = float(self.correct[k][i]) / n
                std = (n / (n - 1) * p * (1 - p)) ** 0.5 if n > 1 else float("nan")  # sample std of 0/1 hits
                rows.append({"model": m.label, "checkpoint": m.checkpoint, "arch": m.spec.arch, "layer": layer,
                             "metric": metric, "value": p, "std": std, "n_images": n})
        return tidy(rows)

    def notes(self) -> List[str]:
        out = []
        if self.left_out:
            out.append(f"CKA leaves out the last {plural(self.left_out, 'image')} (a minibatch of fewer than "
                       f"{MIN_BATCH}: the unbiased HSIC needs {MIN_BATCH}); the logit lens uses all {self.n_images}")
        out += [f"{label} has no forward_head and norm (timm's ViT head): no logit lens" for label in self.without_head]
        return out


def _same_input(loaded: Sequence[LoadedModel]) -> InputSpec:
    """The one input spec of every model: CKA compares representations of the same images."""
    groups = group_by_input(loaded)
    if len(groups) > 1:
        (s1, g1), (s2, g2) = list(groups.items())[:2]
        raise AttnlabError(f"CKA compares models on the same images, but {g1[0].label} takes {_describe(s1)} and "
                           f"{g2[0].label} {_describe(s2)}; compare models with the same input in one run")
    return next(iter(groups))


def _describe(spec: InputSpec) -> str:
    return (f"{spec.size[0]}x{spec.size[1]} {spec.channels}-channel images (mean {list(spec.mean)}, "
            f"std {list(spec.std)}, crop {spec.crop_pct})")


def _label_use(m: LoadedModel, selection: ImageSelection, ignore_class_names: bool) -> Tuple[bool, Optional[str]]:
    """Whether the logit lens of ``m`` is scored against the labels, and if not, why."""
    if not selection.labelled:
        return False, None
    classes = selection.dataset_for(m.spec.input.channels).classes
    if not ignore_class_names:
        check_class_names(m.spec.classes, classes, m.label, f"dataset {selection.dataset}")
    if len(classes) != m.spec.num_classes:
        return False, (f"dataset {selection.dataset} has {len(classes)} classes but {m.label} predicts "
                       f"{m.spec.num_classes}: its logit lens is the agreement with its final prediction")
    return True, None


def measure_similarity(
    models: Union[ModelSource, Sequence[ModelSource]],
    labels: Optional[Sequence[str]] = None,
    *,
    images: Optional[Sequence[PathLike]] = None,
    dataset: Optional[str] = None,
    data_dir: Optional[PathLike] = None,
    split: str = "test",
    num_images: Optional[int] = None,
    tokens: str = "cls",
    batch_size: int = 64,
    device: DeviceLike = "auto",
    logit_lens: bool = True,
    model: Optional[str] = None,
    pretrained: bool = False,
    official_config: Optional[PathLike] = None,
    input_spec: Optional[InputSpec] = None,
    ignore_class_names: bool = False,
    progress_factory: Optional[ProgressFactory] = None,
) -> SimilarityResult:
    """Block x block linear CKA within every model and between every pair, and the logit lens.

    All models see the same images in the same minibatches, so they must share one input
    spec. ``tokens``: ``cls``, ``mean`` (of the patch tokens) or ``patches`` (all of them).
    """
    check_choice(tokens, TOKEN_CHOICES, "--tokens")
    check_batch_size(batch_size)
    if batch_size < MIN_BATCH:
        raise AttnlabError(f"--batch-size must be at least {MIN_BATCH} for CKA (the unbiased HSIC of a minibatch "
                           f"needs {MIN_BATCH} images), not {batch_size}")
    selection = ImageSelection(images=images, dataset=dataset, data_dir=data_dir, split=split, num_images=num_images)
    loaded = load_models(models, labels, model=model, pretrained=pretrained, official_config=official_config,
                         input_spec=input_spec)
    spec = _same_input(loaded)
    n = len(selection.dataset_for(spec.channels))
    if n < MIN_BATCH:
        raise AttnlabError(f"CKA needs at least {MIN_BATCH} images (the unbiased HSIC), got {n}")
    who = ", ".join(m.label for m in loaded)
    notes = selection.notes(spec, who)
    use = {m.label: _label_use(m, selection, ignore_class_names) for m in loaded}
    notes += [note for _, note in use.values() if note]
    if logit_lens and not selection.labelled:
        notes.append("the images have no labels: the logit lens reports the agreement of each block's "
                     "prediction with the model's final prediction (logit_lens_agreement)")
    progress = progress_factory(who, n) if progress_factory else None
    stream = SimilarityStream(loaded, tokens=tokens, device=device, logit_lens=logit_lens,
                              use_labels={k: v for k, (v, _) in use.items()})
    with stream:
        for x, y in selection.batches(spec, batch_size):
            stream.update(x, y)
            if progress is not None:
                progress(stream.n_images)
    return SimilarityResult(stream.frame(), notes + stream.notes())
