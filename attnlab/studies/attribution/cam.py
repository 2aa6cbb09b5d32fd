"""GradCAM-family maps: pytorch-grad-cam's own classes, targets and ``reshape_transform`` hook.

Two things make them right for any ViT family: the token -> grid reshape follows the model's
layout, or for Swin and MViTv2 the target stage's grid (``grid.py``), and the target layer
is one whose patch tokens get gradient, observed through a tap (``layers.py``). AblationCAM
uses pytorch-grad-cam's ``AblationLayerVit``, which ablates the last (channel) axis: right
for ``[B, N, C]`` tokens and Swin's ``[B, H, W, C]`` alike.

Errors raised inside pytorch-grad-cam become an ``AttnlabError`` naming the method and
the cause's message, chained with ``from``; none is swallowed (``BaseCAM.__exit__`` would
swallow IndexError, so a CAM is never used as a context manager here).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, List, Sequence

import numpy as np
import torch
from torch import nn

from ...devices import model_device
from ...errors import AttnlabError, one_line
from ..inputs import check_batch_size
from .grid import reshape_transform_for
from .layers import resolve_layer, tap_layer
from .options import METHODS, parse_methods


@contextmanager
def quiet_progress() -> Iterator[None]:
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


def _make_cam(method: str, model: nn.Module, tap: nn.Module, reshape: Callable[[torch.Tensor], torch.Tensor],
              batch_size: int):
    """The pytorch-grad-cam object of ``method`` on ``tap``, with its batch size where it has one."""
    import pytorch_grad_cam

    cls = getattr(pytorch_grad_cam, METHODS[method].cam_class)
    kwargs = {}
    if method == "ablationcam":
        kwargs = {"ablation_layer": pytorch_grad_cam.AblationLayerVit(), "batch_size": batch_size}
    cam = cls(model=model, target_layers=[tap], reshape_transform=reshape, **kwargs)
    if method == "scorecam":
        cam.batch_size = batch_size
    return cam


def compute_cam(
    model: nn.Module,
    x: torch.Tensor,
    method: str,
    targets: Sequence[int],
    layer: str = "auto",
    batch_size: int = 16,
) -> np.ndarray:
    """``[B, H, W]`` maps in [0, 1] from a pytorch-grad-cam method, one per image and target class
    (a method of the table that is not a CAM, e.g. ``chefer``, runs its own ``compute``)."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    method = parse_methods(method)[0]
    if METHODS[method].compute is not None:
        return METHODS[method].compute(model, x, method, targets, layer=layer, batch_size=batch_size)
    if len(targets) != len(x):
        raise AttnlabError(f"{len(targets)} targets for {len(x)} images; give one target class per image")
    check_batch_size(batch_size)
    name, module = resolve_layer(model, layer)
    reshape = reshape_transform_for(model, tuple(x.shape[-2:]))
    device = model_device(model)
    was_training = model.training
    out: List[np.ndarray] = []
    try:
        with tap_layer(model, module) as tap, quiet_progress():
            cam = _make_cam(method, model, tap, reshape, batch_size)
            try:
                for start in range(0, len(x), batch_size):
                    xb = x[start:start + batch_size].to(device)
                    tb = [ClassifierOutputTarget(int(t)) for t in targets[start:start + batch_size]]
                    if METHODS[method].needs_gradient:
                        with torch.enable_grad():  # gradients reach the layer even if the weights are frozen
                            maps = cam(input_tensor=xb.detach().clone().requires_grad_(True), targets=tb)
                    else:
                        maps = cam(input_tensor=xb, targets=tb)
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
