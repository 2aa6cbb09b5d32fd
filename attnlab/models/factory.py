"""Build models by name: the zoo registered with timm, one-line errors for names nobody
knows, and published weights that fail fast, in one line, when the hub cannot be reached.

Importing this module registers the zoo's families with timm (``attnlab._registration``
does so as soon as timm is imported).
"""
from __future__ import annotations

import contextlib
import difflib
import logging
import os
import socket
import sys
import threading
from functools import partial
from typing import Any, Callable, Dict, Iterator, Tuple
from urllib.parse import urlparse
from urllib.request import getproxies, proxy_bypass

import timm
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models import vision_transformer as timm_vit
from torch import nn

from ..errors import CheckpointError, ModelNameError
from ..load_errors import first_sentence
from .zoo import ENTRIES, FAMILIES, RESOLUTIONS, ModelEntry

HUB_TIMEOUT_S = 3.0  # one TCP connect to the hub; huggingface_hub alone retries for ~45 s


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


# ----------------------------------------------------------------------------- published weights

def _offline_by_env() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return bool(constants.HF_HUB_OFFLINE) or flag.strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_address() -> Tuple[str, int]:
    """Host and port a hub request connects to first: the hub itself, or the proxy in front of it."""
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    host = url.hostname or "huggingface.co"
    proxy = None if proxy_bypass(host) else getproxies().get(url.scheme)
    if proxy:
        url = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        host = url.hostname or host
    return host, url.port or (443 if url.scheme == "https" else 80)


def hub_reachable(timeout: float = HUB_TIMEOUT_S) -> bool:
    """Whether one TCP connect to the hub succeeds within ``timeout`` s (False in offline mode)."""
    if _offline_by_env():
        return False
    address, answered = hub_address(), []

    def probe() -> None:
        try:
            socket.create_connection(address, timeout=timeout).close()
            answered.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)  # name lookup ignores socket timeouts
    thread.start()
    thread.join(timeout)
    return bool(answered)


@contextlib.contextmanager
def _quiet_hub(offline: bool) -> Iterator[None]:
    """huggingface_hub without its retry warnings, and cache-only when ``offline``."""
    from huggingface_hub import constants

    logger = logging.getLogger("huggingface_hub")
    level, was_offline = logger.level, constants.HF_HUB_OFFLINE
    logger.setLevel(logging.ERROR)
    constants.HF_HUB_OFFLINE = was_offline or offline  # read at request time: blocks every request
    try:
        yield
    finally:
        logger.setLevel(level)
        constants.HF_HUB_OFFLINE = was_offline


def create_pretrained(name: str, **options: Any) -> nn.Module:
    """``create_model(name, pretrained=True)``, failing in one line (and seconds) without the hub.

    Offline (no connect to the hub within a few seconds, or ``HF_HUB_OFFLINE=1``) the
    weights come from the local Hugging Face cache or not at all; huggingface_hub's
    retries are never waited for.
    """
    resolve_model_name(name)
    fail = f"could not load pretrained weights for {name}"
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError as e:  # a tag the architecture does not have
        raise CheckpointError(f"{fail}: {first_sentence(e)}; `timm.list_pretrained('{name.split('.')[0]}*')` "
                              "lists the published tags") from None
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise CheckpointError(f"{fail}: no pretrained weights are published for it; train it with "
                              "`attnlab train`, or pass a weights file with --ckpt FILE")
    offline = bool(cfg.hf_hub_id) and not hub_reachable()
    try:
        with _quiet_hub(offline):
            return create_model(name, pretrained=True, **options)
    except ModelNameError:
        raise
    except Exception as e:  # hub, network, cache and "no weights" errors all end here
        if offline:
            why = "offline mode is on (HF_HUB_OFFLINE)" if _offline_by_env() else \
                f"the model hub ({hub_address()[0]}) is unreachable"
            raise CheckpointError(f"{fail}: {why} and the weights are not in the local cache; to load "
                                  "weights offline, pass a local weights file with --ckpt FILE "
                                  "(with --model NAME for a plain state dict)") from None
        raise CheckpointError(f"{fail}: {first_sentence(e)}; check the network access to the model hub, "
                              "or pass a local weights file with --ckpt FILE") from None


# ----------------------------------------------------------------------------- timm registration

def checkpoint_filter_fn(state_dict: Dict[str, Any], model) -> Dict[str, Any]:
    """Adapt others' ViT / ReViT weights to these models.

    Understands the official ReViT checkpoints (``model_state`` wrapper,
    ``head.projection``) and then everything timm's ViT filter understands (position
    embedding resizing, patch embedding resampling, common wrappers).
    """
    if "model_state" in state_dict and isinstance(state_dict["model_state"], dict):
        state_dict = state_dict["model_state"]
    state_dict = {
        ("head." + k[len("head.projection."):] if k.startswith("head.projection.") else k): v
        for k, v in state_dict.items()
    }
    alpha = state_dict.pop("alpha", None)
    out = timm_vit.checkpoint_filter_fn(state_dict, model)
    if alpha is not None:
        out["alpha"] = alpha
    return out


def _model_kwargs(entry: ModelEntry, kwargs: Dict[str, Any]) -> Tuple[type, Dict[str, Any]]:
    # imported here, not on top: registration runs inside timm's import, maybe while these load
    from .broadcast import BroadcastBlock
    from .residual import ResidualVisionTransformer

    fam = FAMILIES[entry.family]
    args = dict(entry.config)
    args.update(kwargs)
    if fam.residual:
        if fam.broadcast:
            args.setdefault("cb_placement", "mlp")
        elif args.get("cb_placement") is not None:
            raise ValueError(f"{entry.name} has no context broadcasting; use revit_cb_* for CB options")
        return ResidualVisionTransformer, args
    cb_placement = args.pop("cb_placement", "mlp" if fam.broadcast else None)
    cb_scale = args.pop("cb_learnable_scale", False)
    if fam.broadcast:
        args["block_fn"] = partial(BroadcastBlock, cb_placement=cb_placement, cb_learnable_scale=cb_scale)
    elif cb_placement is not None or cb_scale:
        raise ValueError(f"{entry.name} has no context broadcasting; use vit_cb_* for CB options")
    return timm_vit.VisionTransformer, args


def _make_entrypoint(entry: ModelEntry) -> Callable[..., Any]:
    def entrypoint(pretrained: bool = False, **kwargs: Any):
        cls, args = _model_kwargs(entry, kwargs)
        return build_model_with_cfg(
            cls, entry.name, pretrained,
            pretrained_filter_fn=checkpoint_filter_fn,
            feature_cfg=dict(out_indices=args.get("depth", 12) - 1, feature_cls="getter"),
            **args,
        )

    entrypoint.__name__ = entry.name
    entrypoint.__qualname__ = entry.name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"{FAMILIES[entry.family].summary}; {entry.size} at {entry.resolution}."
    return entrypoint


def _cfg(entry: ModelEntry) -> Dict[str, Any]:
    res = RESOLUTIONS[entry.resolution]
    return dict(
        url="", num_classes=res.num_classes, input_size=(3, res.img_size, res.img_size),
        pool_size=None, crop_pct=res.crop_pct, interpolation="bicubic", fixed_input_size=True,
        mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
        first_conv="patch_embed.proj", classifier="head", license="mit",
    )


_OURS = [e for e in ENTRIES.values() if e.owner == "attnlab"]
default_cfgs = generate_default_cfgs({e.name: _cfg(e) for e in _OURS})  # timm reads it from this module

_module = sys.modules[__name__]
for _entry in _OURS:
    setattr(_module, _entry.name, register_model(_make_entrypoint(_entry)))

_missing_timm = [e.name for e in ENTRIES.values() if e.owner == "timm" and not timm.is_model(e.name)]
if _missing_timm:  # pragma: no cover - guards against a timm that dropped a name
    raise ImportError(f"timm {timm.__version__} lacks {', '.join(_missing_timm)}; upgrade timm")
