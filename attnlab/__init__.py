"""attnlab: what attention in Vision Transformers does (ViT, ReViT, CB).

``import attnlab`` registers the ViT / ReViT / CB families with timm (as soon as timm is
imported) and exposes the Python API; heavy modules load on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

from . import _registration

__version__ = "0.1.0"

_registration.install()

_API = {
    "load_model": "attnlab.checkpoint",
    "save_checkpoint": "attnlab.checkpoint",
    "read_checkpoint": "attnlab.checkpoint",
    "Checkpoint": "attnlab.checkpoint",
    "ModelSpec": "attnlab.spec",
    "create_model": "attnlab.models",
    "list_models": "attnlab.models",
    "AttnlabError": "attnlab.errors",
    "CheckpointError": "attnlab.errors",
    "ModelNameError": "attnlab.errors",
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'attnlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_API))
