"""What the user may ask for: the attribution methods (a table, as data), the faithfulness
protocols, and the class each map explains."""
from __future__ import annotations

import difflib
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from ...errors import AttnlabError
from .attention_gradients import gradient_attention_maps

#: ``compute(model, x, method, targets, layer, batch_size) -> [B, H, W]`` maps in [0, 1].
ComputeMaps = Callable[..., np.ndarray]


class CamMethod(NamedTuple):
    """An attribution method: a pytorch-grad-cam class (imported when used) or, for a method that is
    not a CAM, attnlab's own ``compute`` function; whether it backpropagates; and how the figure
    says where its map comes from (empty: the CAM's target layer)."""

    cam_class: Optional[str]
    needs_gradient: bool
    compute: Optional[ComputeMaps] = None
    where: str = ""


METHODS: Dict[str, CamMethod] = {
    "gradcam": CamMethod("GradCAM", True),
    "gradcam++": CamMethod("GradCAMPlusPlus", True),
    "xgradcam": CamMethod("XGradCAM", True),
    "eigencam": CamMethod("EigenCAM", False),
    "layercam": CamMethod("LayerCAM", True),
    "scorecam": CamMethod("ScoreCAM", False),
    "ablationcam": CamMethod("AblationCAM", False),
    # not CAMs: attention x its gradient (attention_gradients.py)
    "chefer": CamMethod(None, True, gradient_attention_maps, "chefer (all layers)"),
    "attn-grad": CamMethod(None, True, gradient_attention_maps, "attn-grad (last layer)"),
}
#: The map that is not a method one picks: attention rollout (same place in tables and arrays as a method).
ROLLOUT = "rollout"
DEFAULT_METHODS = ("gradcam",)
#: ``--faithfulness`` protocols: ROAD + confidence drop, Chefer's perturbation curves, RISE deletion / insertion.
FAITHFULNESS = ("road", "perturbation", "deletion")
DEFAULT_FAITHFULNESS = ("road", "perturbation")
TARGET_HELP = "pass predicted, true, a class name or a class index"
TRUE_NEEDS_LABELS = ("--target true needs labelled images, but loose --images have no labels; "
                     "use --dataset NAME, or --target predicted or a class")


def _parse_names(values: Union[str, Sequence[str], None], choices: Sequence[str], default: Sequence[str],
                 what: str) -> List[str]:
    """Names from repeated and/or comma-separated values, in order, without repeats; unknown ones fail
    with the closest choice."""
    items = [values] if isinstance(values, str) else list(values or default)
    out: List[str] = []
    for item in items:
        for name in str(item).split(","):
            name = name.strip().lower()
            if not name:
                continue
            if name not in choices:
                close = difflib.get_close_matches(name, list(choices), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise AttnlabError(f"unknown {what} {name!r}{hint}; choose from {', '.join(choices)}")
            if name not in out:
                out.append(name)
    if not out:
        raise AttnlabError(f"no {what} given; choose from {', '.join(choices)}")
    return out


def parse_methods(methods: Union[str, Sequence[str], None]) -> List[str]:
    """Method names from repeated and/or comma-separated values, in order, without repeats."""
    return _parse_names(methods, list(METHODS), DEFAULT_METHODS, "method")


def parse_faithfulness(protocols: Union[str, Sequence[str], None]) -> Tuple[str, ...]:
    """``--faithfulness`` protocols (``road``, ``perturbation``, ``deletion``), comma-separated or repeated."""
    return tuple(_parse_names(protocols, FAITHFULNESS, DEFAULT_FAITHFULNESS, "--faithfulness protocol"))


def check_target(target: Optional[str], labelled: bool) -> str:
    """``--target`` as given, stripped; fails before any model loads when it cannot be met."""
    text = str(target).strip() if target is not None else ""
    if not text:
        raise AttnlabError(f"--target must not be empty; {TARGET_HELP}")
    if text == "true" and not labelled:
        raise AttnlabError(TRUE_NEEDS_LABELS)
    return text


def resolve_targets(target: str, predicted: np.ndarray, labels: np.ndarray, classes: Sequence[str],
                    label: str = "the model") -> np.ndarray:
    """Class index per image for ``--target predicted | true | CLASS`` (a class name or index)."""
    n_classes = len(classes)
    if target == "predicted":
        return np.asarray(predicted, dtype=np.int64)
    if target == "true":
        labels = np.asarray(labels, dtype=np.int64)
        if (labels < 0).any():
            raise AttnlabError(TRUE_NEEDS_LABELS)
        if (labels >= n_classes).any():
            raise AttnlabError(f"--target true: the dataset has label {int(labels.max())}, but {label} has only "
                               f"{n_classes} classes")
        return labels
    folded = [str(c).casefold() for c in classes]
    if target in classes:
        index = list(classes).index(target)
    elif folded.count(target.casefold()) == 1:  # `sneaker` names the class `Sneaker`
        index = folded.index(target.casefold())
    elif target.strip().lstrip("-").isdigit() and 0 <= int(target) < n_classes:
        index = int(target)
    else:
        close = difflib.get_close_matches(target.casefold(), folded, n=1)
        hint = f" (did you mean {list(classes)[folded.index(close[0])]!r}?)" if close else ""
        shown = ", ".join(list(classes)[:8]) + (", ..." if n_classes > 8 else "")
        raise AttnlabError(f"--target {target!r} is not a class of {label}{hint} ({n_classes} classes: {shown}); "
                           f"{TARGET_HELP} 0..{n_classes - 1}")
    return np.full(len(predicted), index, dtype=np.int64)
