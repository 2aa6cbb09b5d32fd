"""Build models by name, with one-line errors for names nobody knows."""
from __future__ import annotations

import difflib
from typing import Any

import timm
from torch import nn

from ..errors import ModelNameError


def resolve_model_name(name: str) -> str:
    """Return ``name`` if timm (with attnlab's families) can build it, else raise with suggestions."""
    base = name.split(".")[0]
    if timm.is_model(base):
        return name
    close = difflib.get_close_matches(base, timm.list_models(), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `attnlab models` lists attnlab's families"
    raise ModelNameError(f"unknown model name {name!r}{hint}")


def create_model(name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with attnlab's families registered and a clear error for unknown names."""
    return timm.create_model(resolve_model_name(name), pretrained=pretrained, **kwargs)
