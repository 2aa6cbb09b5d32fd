"""What the user may ask for: the CAM methods (a table, as data) and the class each map explains."""
from __future__ import annotations

import difflib
from typing import Dict, List, NamedTuple, Optional, Sequence, Union

import numpy as np

from ...errors import AttnlabError


class CamMethod(NamedTuple):
    """A pytorch-grad-cam method: its class name (imported when used) and whether it backpropagates."""

    cam_class: str
    needs_gradient: bool


METHODS: Dict[str, CamMethod] = {
    "gradcam": CamMethod("GradCAM", True),
    "gradcam++": CamMethod("GradCAMPlusPlus", True),
    "xgradcam": CamMethod("XGradCAM", True),
    "eigencam": CamMethod("EigenCAM", False),
    "layercam": CamMethod("LayerCAM", True),
    "scorecam": CamMethod("ScoreCAM", False),
    "ablationcam": CamMethod("AblationCAM", False),
}
#: The map that is not a CAM: attention rollout (same place in tables and arrays as a method).
ROLLOUT = "rollout"
DEFAULT_METHODS = ("gradcam",)
TARGET_HELP = "pass predicted, true, a class name or a class index"
TRUE_NEEDS_LABELS = ("--target true needs labelled images, but loose --images have no labels; "
                     "use --dataset NAME, or --target predicted or a class")


def parse_methods(methods: Union[str, Sequence[str], None]) -> List[str]:
    """Method names from repeated and/or comma-separated values, in order, without repeats."""
    items = [methods] if isinstance(methods, str) else list(methods or DEFAULT_METHODS)
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
