"""Where a ViT looks for its decision: GradCAM-family maps (pytorch-grad-cam) and attention rollout.

    cams = compute_cam(model, x, "gradcam", targets=[3, 1])      # [B, H, W] in [0, 1]
    grid = attention_rollout(model, x)                            # [B, gh, gw]
    result = explain(["vit.pt", "revit.pt"], images=["img/"], methods=["gradcam", "eigencam"])
    write_gradcam(result, "out/gradcam")     # gradcam.png/.pdf, gradcam_maps.npz, gradcam.csv

**CAMs** are pytorch-grad-cam's own classes, targets (``ClassifierOutputTarget``) and
``reshape_transform`` hook. Two things make them right for any ViT:

- the token -> grid reshape comes from the model's ``TokenLayout`` at the input's size
  (any number of prefix tokens: class, distillation, register; any grid, non-square
  too), never a hard-coded 14x14;
- ``layer="auto"`` picks a layer whose patch tokens receive gradient from the target:
  for models that pool their class token, ``blocks[-1].norm1`` (the last block's output
  patch tokens feed nothing the class logit reads, so their gradient is zero); for
  models that pool patch tokens (``avg``, ``max``, ``map``), the last block's output.

The chosen module is observed through a parameter-free tap (an ``nn.Identity`` attached
to the model for the duration of the call): the module's output, or the first element
of a tuple output, passes through it. That is what lets pytorch-grad-cam hook ReViT
blocks, which return ``(tokens, logits)``, and what AblationCAM replaces. The model is
left exactly as it was, even on error. Errors raised inside pytorch-grad-cam become an
``AttnlabError`` naming the method and the cause's message, chained with ``from``; none
is swallowed (``BaseCAM.__exit__`` would swallow IndexError, so it is never used as a
context manager here).

**Attention rollout** (Abnar & Zuidema; jacobgil/vit-explain, done right): per layer
``A' = rownorm((mean_heads A + I) / 2)`` with keepdim row normalisation, multiplied over
layers with the first layer applied first (``R = A'_L ... A'_1``), for the whole batch.
The map is the class token's row of ``R`` over the patch keys (the mean of the class and
distillation rows for distilled models, whose eval output averages both heads), or,
for models that pool patch tokens, the mean of the patch rows. For CB models rollout
sees only attention, not the uniform broadcast term.

**Faithfulness metrics** (pytorch-grad-cam's ``metrics``), on the softmax probability of
the target class (``ClassifierOutputSoftmaxTarget``), per image:

    road_most_relevant_first   ROAD, mean over percentiles of p(removed most relevant) - p(x)
    road_least_relevant_first  ROAD, mean over percentiles of p(removed least relevant) - p(x)
    road_combined              (least - most) / 2, higher = more faithful
    confidence_drop            p(x) - p(x * map), positive when masking by the map lowers it
    probability                p(target | x) (one per model and image, not per method)

ROAD ranks pixels by the map; ties (CAMs have many exact zeros) are broken by a fixed
jitter of 1e-6, since pytorch-grad-cam's percentile threshold would otherwise remove
every pixel and its linear imputation becomes singular. ROAD's imputation noise is
seeded, so the numbers are reproducible.

**CSV mapping** (``gradcam.csv``, the ``attnlab.tables`` schema): ``transform`` = the
method (``gradcam``, ..., ``rollout``; ``none`` for ``probability``), ``attention`` =
``-``, ``layer`` = -1, ``head`` = image index with ``n_images`` = 1 for per-image rows,
and ``head`` = -1 with ``n_images`` = N (finite values) for the mean over images (with
``std`` and a 95% interval). ``magnitude`` and ``radius`` are empty. All maps are scaled
to [0, 1] per image (pytorch-grad-cam's ``scale_cam_image``; rollout likewise, after
bilinear upsampling to the input size).
"""
from __future__ import annotations

import difflib
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import torch
from torch import nn

from .data.base import one_line
from .errors import AttnlabError
from .layout import TokenLayout
from .tables import tidy

# method name -> pytorch-grad-cam class name (imported when used)
METHODS: Dict[str, str] = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "eigencam": "EigenCAM",
    "layercam": "LayerCAM",
    "scorecam": "ScoreCAM",
    "ablationcam": "AblationCAM",
}
GRADIENT_FREE = frozenset({"eigencam", "scorecam", "ablationcam"})
ROLLOUT = "rollout"
METRICS = ("road_most_relevant_first", "road_least_relevant_first", "road_combined", "confidence_drop")
ROAD_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
DEFAULT_NUM_IMAGES = 8
PATCH_POOLS = ("avg", "avgmax", "max", "map")
_TAP = "_attnlab_cam_tap"
_TIE_JITTER = 1e-6


# ----------------------------------------------------------------------------- options

def parse_methods(methods: Union[str, Sequence[str], None]) -> List[str]:
    """Method names from repeated and/or comma-separated values, in order, without repeats."""
    items = [methods] if isinstance(methods, str) else list(methods or ["gradcam"])
    out: List[str] = []
    for item in items:
        for name in str(item).split(","):
            name = name.strip().lower()
            if not name:
                continue
            if name not in METHODS:
                close = difflib.get_close_matches(name, list(METHODS), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise AttnlabError(f"unknown method {name!r}{hint}; choose from {', '.join(METHODS)}")
            if name not in out:
                out.append(name)
    if not out:
        raise AttnlabError(f"no method given; choose from {', '.join(METHODS)}")
    return out


def resolve_targets(target: str, predicted: np.ndarray, labels: np.ndarray, classes: Sequence[str],
                    label: str = "the model") -> np.ndarray:
    """Class index per image for ``--target predicted | true | CLASS`` (a class name or index)."""
    n_classes = len(classes)
    if target == "predicted":
        return np.asarray(predicted, dtype=np.int64)
    if target == "true":
        labels = np.asarray(labels, dtype=np.int64)
        if (labels < 0).any():
            raise AttnlabError("--target true needs labelled images, but loose --images have no labels; "
                               "use --dataset NAME, or --target predicted or a class")
        if (labels >= n_classes).any():
            raise AttnlabError(f"--target true: the dataset has label {int(labels.max())}, but {label} has only "
                               f"{n_classes} classes")
        return labels
    if target in classes:
        index = list(classes).index(target)
    elif target.strip().lstrip("-").isdigit() and 0 <= int(target) < n_classes:
        index = int(target)
    else:
        shown = ", ".join(list(classes)[:8]) + (", ..." if n_classes > 8 else "")
        raise AttnlabError(f"--target {target!r} is not a class of {label} ({n_classes} classes: {shown}); "
                           f"pass predicted, true, a class name or an index 0..{n_classes - 1}")
    return np.full(len(predicted), index, dtype=np.int64)


# ----------------------------------------------------------------------------- tokens -> grid

def tokens_to_grid(tokens: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """``[B, N, C]`` tokens -> ``[B, C, gh, gw]`` patch grid, dropping the layout's prefix tokens.

    A ``[B, G, C]`` tensor of patch tokens only (no prefix) and an NCHW map pass too.
    """
    if isinstance(tokens, (tuple, list)):
        tokens = tokens[0]
    if tokens.ndim == 4:
        return tokens
    if tokens.ndim != 3:
        raise ValueError(f"expected [batch, tokens, channels] from the target layer, got shape {tuple(tokens.shape)}; "
                         "pick a layer inside the transformer blocks")
    b, n, c = tokens.shape
    gh, gw = layout.grid_size
    if n == layout.num_tokens:
        tokens = tokens[:, layout.num_prefix_tokens:]
    elif n != layout.num_patches:
        raise ValueError(f"the target layer gives {n} tokens, but the model's layout has {layout.num_prefix_tokens} "
                         f"prefix + {gh}x{gw} patch tokens; pick a layer in the transformer blocks")
    return tokens.reshape(b, gh, gw, c).permute(0, 3, 1, 2)


def make_reshape_transform(layout: TokenLayout) -> Callable[[torch.Tensor], torch.Tensor]:
    """pytorch-grad-cam's ``reshape_transform`` for a model's layout (any prefix count, any grid)."""
    def reshape_transform(tokens: torch.Tensor) -> torch.Tensor:
        return tokens_to_grid(tokens, layout)

    return reshape_transform


# ----------------------------------------------------------------------------- layers

def auto_layer(model: nn.Module) -> str:
    """The default target layer: one whose patch tokens get gradient from the class logit."""
    blocks = getattr(model, "blocks", None)
    if blocks is None or len(blocks) == 0:
        raise AttnlabError(f"{type(model).__name__} has no transformer blocks; pass --layer NAME")
    last = len(blocks) - 1
    if getattr(model, "global_pool", "token") in PATCH_POOLS:
        return f"blocks.{last}"
    if not hasattr(blocks[last], "norm1"):
        raise AttnlabError(f"blocks.{last} has no norm1; pass --layer NAME")
    return f"blocks.{last}.norm1"


def resolve_layer(model: nn.Module, layer: str = "auto") -> Tuple[str, nn.Module]:
    """``(name, module)`` for ``auto`` or a module path such as ``blocks.4.norm1``."""
    name = auto_layer(model) if layer in (None, "", "auto") else str(layer).strip()
    modules = {n: m for n, m in model.named_modules() if n and _TAP not in n}
    if name not in modules:
        close = difflib.get_close_matches(name, list(modules), n=3, cutoff=0.6)
        blocks = [n for n in modules if n.startswith("blocks.") and n.count(".") <= 2 and
                  (n.count(".") == 1 or n.endswith(".norm1"))]
        shown = close or (blocks[:2] + blocks[-2:] + [n for n in ("norm", "fc_norm") if n in modules])
        raise AttnlabError(f"unknown layer {name!r}; valid layers include {', '.join(dict.fromkeys(shown))} "
                           f"(module paths of the model, {len(modules)} in all)")
    return name, modules[name]


@contextmanager
def _tap(model: nn.Module, module: nn.Module) -> Iterator[nn.Module]:
    """An ``nn.Identity`` the module's (first) output passes through, attached to ``model``.

    pytorch-grad-cam hooks the tap, so tuple outputs work; AblationCAM swaps the tap (it
    finds it among the model's modules), which is why the hook looks it up at call time.
    """
    tap = nn.Identity()
    model.add_module(_TAP, tap)

    def hook(mod: nn.Module, args: tuple, output):  # noqa: ANN001
        current = model._modules[_TAP]
        if isinstance(output, tuple):
            return (current(output[0]),) + tuple(output[1:])
        return current(output)

    handle = module.register_forward_hook(hook)
    try:
        yield tap
    finally:
        handle.remove()
        model._modules.pop(_TAP, None)


@contextmanager
def _quiet_progress() -> Iterator[None]:
    """ScoreCAM / AblationCAM draw a tqdm bar per image; keep the terminal for attnlab's own output."""
    from pytorch_grad_cam import ablation_cam, score_cam

    class _Silent:
        @staticmethod
        def tqdm(iterable, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
            return iterable

    saved = [(m, m.tqdm) for m in (score_cam, ablation_cam)]
    try:
        for m, _ in saved:
            m.tqdm = _Silent
        yield
    finally:
        for m, original in saved:
            m.tqdm = original


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


# ----------------------------------------------------------------------------- CAMs

def compute_cam(
    model: nn.Module,
    x: torch.Tensor,
    method: str,
    targets: Sequence[int],
    layer: str = "auto",
    batch_size: int = 16,
) -> np.ndarray:
    """``[B, H, W]`` maps in [0, 1] from a pytorch-grad-cam method, one per image and target class."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    method = parse_methods(method)[0]
    if len(targets) != len(x):
        raise AttnlabError(f"{len(targets)} targets for {len(x)} images")
    if batch_size < 1:
        raise AttnlabError(f"--batch-size must be at least 1, not {batch_size}")
    name, module = resolve_layer(model, layer)
    layout = TokenLayout.from_model(model, tuple(x.shape[-2:]))
    device = _model_device(model)
    cls = getattr(pytorch_grad_cam, METHODS[method])
    was_training = model.training
    out: List[np.ndarray] = []
    try:
        with _tap(model, module) as tap, _quiet_progress():
            kwargs = {}
            if method == "ablationcam":
                kwargs = {"ablation_layer": pytorch_grad_cam.AblationLayerVit(), "batch_size": batch_size}
            cam = cls(model=model, target_layers=[tap], reshape_transform=make_reshape_transform(layout), **kwargs)
            if method == "scorecam":
                cam.batch_size = batch_size
            try:
                for start in range(0, len(x), batch_size):
                    xb = x[start:start + batch_size].to(device)
                    tb = [ClassifierOutputTarget(int(t)) for t in targets[start:start + batch_size]]
                    if method in GRADIENT_FREE:
                        maps = cam(input_tensor=xb, targets=tb)
                    else:
                        with torch.enable_grad():  # gradients reach the layer even if the weights are frozen
                            maps = cam(input_tensor=xb.detach().clone().requires_grad_(True), targets=tb)
                    out.append(np.asarray(maps, dtype=np.float32))
            finally:
                cam.activations_and_grads.release()
                model.zero_grad(set_to_none=True)
    except AttnlabError:
        raise
    except Exception as e:
        raise AttnlabError(f"{method} failed at layer {name}: {type(e).__name__}: {one_line(e)}") from e
    finally:
        model.train(was_training)
    maps = np.concatenate(out, axis=0)
    if not np.isfinite(maps).all():
        raise AttnlabError(f"{method} at layer {name} gave non-finite maps (NaN or inf activations or gradients)")
    return maps


# ----------------------------------------------------------------------------- rollout

def rollout(attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[B, N, N]`` rollout ``A'_L ... A'_1`` of per-layer ``[B, heads, N, N]`` attention; rows sum to 1."""
    if not attentions:
        raise AttnlabError("attention rollout needs at least one layer of attention")
    first = attentions[0]
    eye = torch.eye(first.shape[-1], dtype=torch.float64, device=first.device)
    result = eye.expand(first.shape[0], -1, -1)
    for a in attentions:
        a = (a.to(torch.float64).mean(dim=1) + eye) / 2
        a = a / a.sum(dim=-1, keepdim=True)
        result = a @ result
    return result.to(first.dtype)


def rollout_queries(model: nn.Module) -> Optional[List[int]]:
    """Token rows whose rollout is the map: class (and distillation) token, or None for the patch mean."""
    if getattr(model, "global_pool", "token") in PATCH_POOLS or getattr(model, "cls_token", None) is None:
        return None
    rows = [0]
    if getattr(model, "dist_token", None) is not None and not getattr(model, "distilled_training", False):
        rows.append(1)
    return rows


def attention_rollout(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``[B, gh, gw]`` attention rollout map of each image (raw rollout mass on each patch)."""
    from .capture import capture_attention

    layout = TokenLayout.from_model(model, tuple(x.shape[-2:]))
    r = rollout(capture_attention(model, x))
    p = layout.num_prefix_tokens
    rows = rollout_queries(model)
    if rows is None:
        m = r[:, p:, p:].mean(dim=1)
    else:
        m = r[:, rows, p:].mean(dim=1)
    return m.reshape(x.shape[0], *layout.grid_size)


def upsample_maps(maps: torch.Tensor, size: Tuple[int, int]) -> np.ndarray:
    """``[B, gh, gw]`` -> ``[B, H, W]`` float32 in [0, 1] per image (bilinear, like pytorch-grad-cam)."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    up = torch.nn.functional.interpolate(maps[:, None].double(), size=tuple(size), mode="bilinear",
                                         align_corners=False)[:, 0]
    return scale_cam_image(up.cpu().numpy())


# ----------------------------------------------------------------------------- metrics

def attribution_metrics(
    model: nn.Module,
    x: torch.Tensor,
    maps: np.ndarray,
    targets: Sequence[int],
    percentiles: Sequence[int] = ROAD_PERCENTILES,
    batch_size: int = 16,
    seed: int = 0,
) -> Dict[str, np.ndarray]:
    """ROAD (most / least relevant first, combined) and confidence drop per image, in probability units."""
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    device = _model_device(model)
    ranked = maps + _TIE_JITTER * np.random.default_rng(seed).random(maps.shape, dtype=np.float32)
    morf_metric = ROADMostRelevantFirstAverage(list(percentiles))
    lerf_metric = ROADLeastRelevantFirstAverage(list(percentiles))
    change_metric = CamMultImageConfidenceChange()
    parts: Dict[str, List[np.ndarray]] = {"morf": [], "lerf": [], "change": []}
    try:
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a singular imputation shows up as NaN, reported by the caller
            torch.manual_seed(seed)
            for start in range(0, len(x), batch_size):
                sl = slice(start, start + batch_size)
                xb = x[sl].to(device)
                tb = [ClassifierOutputSoftmaxTarget(int(t)) for t in targets[sl]]
                parts["morf"].append(np.asarray(morf_metric(xb, ranked[sl], tb, model), dtype=np.float64).reshape(-1))
                parts["lerf"].append(np.asarray(lerf_metric(xb, ranked[sl], tb, model), dtype=np.float64).reshape(-1))
                parts["change"].append(np.asarray(change_metric(xb, maps[sl], tb, model), dtype=np.float64).reshape(-1))
    except AttnlabError:
        raise
    except Exception as e:
        raise AttnlabError(f"ROAD / confidence metrics failed: {type(e).__name__}: {one_line(e)}") from e
    morf, lerf, change = (np.concatenate(parts[k]) for k in ("morf", "lerf", "change"))
    return {"road_most_relevant_first": morf, "road_least_relevant_first": lerf,
            "road_combined": (lerf - morf) / 2, "confidence_drop": -change}


# ----------------------------------------------------------------------------- study

@dataclass
class ModelAttribution:
    """Everything one model said about the images: predictions, maps, metrics."""

    label: str
    checkpoint: str
    arch: str
    layer: str
    classes: List[str]
    inputs: torch.Tensor            # [n, C, H, W] as fed to the model (normalised)
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    probabilities: np.ndarray       # [n, classes]
    targets: np.ndarray             # [n] class index explained
    maps: Dict[str, np.ndarray]     # method (and "rollout") -> [n, H, W] in [0, 1]
    rollout_grid: np.ndarray        # [n, gh, gw] raw rollout
    metrics: Dict[str, Dict[str, np.ndarray]] = field(default_factory=dict)  # method -> metric -> [n]

    @property
    def predictions(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    def display_images(self) -> np.ndarray:
        """``[n, H, W, C]`` in [0, 1]: the inputs with the spec's normalisation undone."""
        x = self.inputs.detach().cpu().double()
        mean = torch.tensor(self.mean, dtype=torch.float64)[None, :, None, None]
        std = torch.tensor(self.std, dtype=torch.float64)[None, :, None, None]
        return (x * std + mean).clamp(0, 1).permute(0, 2, 3, 1).float().numpy()


@dataclass
class AttributionResult:
    """The models' attributions on the same images, the tidy frame and notes for the user."""

    models: List[ModelAttribution]
    methods: List[str]
    labels: np.ndarray              # [n] true labels, -1 when unknown
    frame: pd.DataFrame
    notes: List[str] = field(default_factory=list)

    def arrays(self) -> Dict[str, np.ndarray]:
        """What ``gradcam_maps.npz`` holds (see ``write_gradcam``)."""
        out: Dict[str, np.ndarray] = {}
        for m in self.models:
            for method, maps in m.maps.items():
                out[f"{m.label}/{method}"] = maps.astype(np.float32)
        first = self.models[0]
        out["images"] = first.display_images()
        out["predictions"] = np.stack([m.predictions for m in self.models]).astype(np.int64)
        out["probabilities"] = np.stack([m.probabilities.max(axis=1) for m in self.models]).astype(np.float32)
        out["targets"] = np.stack([m.targets for m in self.models]).astype(np.int64)
        out["target_probabilities"] = np.stack(
            [m.probabilities[np.arange(len(m.targets)), m.targets] for m in self.models]).astype(np.float32)
        out["labels"] = np.asarray(self.labels, dtype=np.int64)
        out["models"] = np.array([m.label for m in self.models])
        out["methods"] = np.array(self.methods + [ROLLOUT])
        out["layers"] = np.array([m.layer for m in self.models])
        return out


def _rows(values: np.ndarray, **keys) -> List[dict]:  # noqa: ANN003
    """Per-image rows (head = image index) and the mean over images (head = -1)."""
    values = np.asarray(values, dtype=np.float64)
    rows = [dict(keys, head=i, value=float(v), n_images=1) for i, v in enumerate(values)]
    finite = values[np.isfinite(values)]
    n = len(finite)
    rows.append(dict(keys, head=-1, value=float(finite.mean()) if n else math.nan,
                     std=float(finite.std(ddof=1)) if n > 1 else math.nan, n_images=n))
    return rows


def _frame(models: Sequence[ModelAttribution]) -> pd.DataFrame:
    rows: List[dict] = []
    for m in models:
        base = dict(model=m.label, checkpoint=m.checkpoint, arch=m.arch, attention="-", layer=-1)
        p_target = m.probabilities[np.arange(len(m.targets)), m.targets]
        rows += _rows(p_target, **base, transform="none", metric="probability")
        for method, metrics in m.metrics.items():
            for metric in METRICS:
                rows += _rows(metrics[metric], **base, transform=method, metric=metric)
    return tidy(rows)


def _resolve_device(device: Optional[str]) -> torch.device:
    if device not in (None, "auto", "cpu", "cuda") and not str(device).startswith("cuda:"):
        raise AttnlabError(f"--device must be auto, cpu or cuda, not {device!r}")
    from .analysis import resolve_device

    return resolve_device(device)


def explain(
    ckpts: Sequence[str],
    labels: Optional[Sequence[str]] = None,
    *,
    images: Optional[Sequence[Union[str, Path]]] = None,
    dataset: Optional[str] = None,
    data_dir: Optional[Union[str, Path]] = None,
    split: str = "test",
    num_images: Optional[int] = None,
    methods: Union[str, Sequence[str], None] = ("gradcam",),
    target: str = "predicted",
    layer: str = "auto",
    batch_size: int = 16,
    device: Optional[str] = "auto",
    metrics: bool = True,
    road_percentiles: Sequence[int] = ROAD_PERCENTILES,
    model: Optional[str] = None,
    pretrained: bool = False,
    official_config: Optional[Union[str, Path]] = None,
    log: Optional[Callable[[str], None]] = None,
) -> AttributionResult:
    """CAMs (each method), attention rollout and faithfulness metrics of every checkpoint on the same images."""
    from .study import data_notes, load_models, open_images

    method_list = parse_methods(methods)
    if batch_size < 1:
        raise AttnlabError(f"--batch-size must be at least 1, not {batch_size}")
    if num_images is not None and num_images < 1:
        raise AttnlabError(f"--num-images must be at least 1, not {num_images}")
    if not target or not str(target).strip():
        raise AttnlabError("--target must be predicted, true, a class name or a class index")
    dev = _resolve_device(device)
    loaded = load_models(ckpts, labels, model=model, pretrained=pretrained, official_config=official_config)
    notes: List[str] = []
    results: List[ModelAttribution] = []
    true_labels: Optional[np.ndarray] = None
    for m in loaded:
        ds = open_images(m.spec, images=images, dataset=dataset, data_dir=data_dir, split=split, num_images=num_images)
        if num_images is None and len(ds) > DEFAULT_NUM_IMAGES:
            notes.append(f"{m.label}: explaining the first {DEFAULT_NUM_IMAGES} of {len(ds)} images; "
                         "pass --num-images for more")
            ds = ds.subset(DEFAULT_NUM_IMAGES)
        notes += data_notes(ds, m.spec, m.label)
        pairs = [ds[i] for i in range(len(ds))]
        x = torch.stack([p[0] for p in pairs])
        y = np.array([int(p[1]) for p in pairs], dtype=np.int64)
        if true_labels is not None and len(y) != len(true_labels):
            raise AttnlabError(f"{m.label} reads {len(y)} images but {results[0].label} read {len(true_labels)}; "
                               "models must see the same images")
        true_labels = y if true_labels is None else true_labels
        net = m.model.to(dev).eval()
        with torch.no_grad():
            logits = torch.cat([net(x[s:s + batch_size].to(dev)) for s in range(0, len(x), batch_size)])
        probs = logits.float().softmax(dim=-1).cpu().numpy()
        classes = list(m.spec.classes) or [str(i) for i in range(probs.shape[1])]
        tgt = resolve_targets(str(target).strip(), probs.argmax(axis=1), y, classes, m.label)
        name, _ = resolve_layer(net, layer)
        if log:
            log(f"{m.label}: {len(x)} images, layer {name}, methods {', '.join(method_list)}")
        maps: Dict[str, np.ndarray] = {}
        for method in method_list:
            try:
                maps[method] = compute_cam(net, x, method, tgt.tolist(), layer=name, batch_size=batch_size)
            except AttnlabError as e:
                raise AttnlabError(f"{m.label}: {e}") from (e.__cause__ or e)
            flat = maps[method].reshape(len(x), -1)
            zero = int((flat.max(axis=1) <= 0).sum())
            if zero:
                notes.append(f"{m.label}: {method} at {name} gave an all-zero map for {zero} of {len(x)} images "
                             "(no positive evidence; with a class-token model, the last block's output gets no "
                             "gradient on its patch tokens: use --layer auto)")
        with torch.no_grad():
            grid = torch.cat([attention_rollout(net, x[s:s + batch_size].to(dev)) for s in range(0, len(x), batch_size)])
        maps[ROLLOUT] = upsample_maps(grid, tuple(x.shape[-2:]))
        result = ModelAttribution(label=m.label, checkpoint=m.checkpoint, arch=m.spec.arch, layer=name,
                                  classes=classes, inputs=x, mean=tuple(m.spec.input.mean), std=tuple(m.spec.input.std),
                                  probabilities=probs, targets=tgt, maps=maps, rollout_grid=grid.cpu().numpy())
        if metrics:
            for method, mp in maps.items():
                values = attribution_metrics(net, x, mp, tgt.tolist(), road_percentiles, batch_size)
                bad = int((~np.isfinite(values["road_combined"])).sum())
                if bad:
                    notes.append(f"{m.label}: ROAD undefined for {bad} image(s) with {method} (imputation failed); "
                                 "left empty")
                result.metrics[method] = values
        results.append(result)
    frame = _frame(results)
    return AttributionResult(models=results, methods=method_list, labels=true_labels, frame=frame, notes=notes)


def write_gradcam(result: AttributionResult, out: Union[str, Path]) -> List[Path]:
    """``gradcam.png``/``.pdf``, ``gradcam_maps.npz`` and ``gradcam.csv`` into ``out``, all or nothing.

    The npz holds ``<model>/<method>`` (and ``<model>/rollout``) maps ``[n, H, W]``,
    ``images`` (the first model's inputs, denormalised, ``[n, H, W, C]`` in [0, 1]),
    ``predictions``, ``probabilities`` (of the predicted class), ``targets`` and
    ``target_probabilities`` (each ``[n_models, n]``), ``labels``, ``models``,
    ``methods`` and ``layers``.
    """
    from .outputs import staged_outputs
    from .plots import save_figure
    from .plots.gradcam import gradcam_grid
    from .tables import write_csv

    with staged_outputs(out) as stage:
        write_csv(result.frame, stage / "gradcam.csv")
        np.savez_compressed(stage / "gradcam_maps.npz", **result.arrays())
        save_figure(gradcam_grid(result), stage, "gradcam")
        names = sorted(p.name for p in stage.iterdir())
    return [Path(out) / n for n in names]
