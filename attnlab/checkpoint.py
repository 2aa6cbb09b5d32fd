"""Self-describing checkpoints: save, read safely, rebuild, and explain what is wrong.

An attnlab checkpoint is one file that is enough to rebuild the model:

    {"format": "attnlab-checkpoint", "format_version": 1,
     "arch": "revit_micro_patch4_32", "options": {...constructor options...},
     "input": {"size": [32, 32], "channels": 1, "mean": [...], "std": [...], ...},
     "classes": ["T-shirt/top", ...],
     "provenance": {"dataset": ..., "epochs": ..., "metrics": {...}, "seed": ...,
                    "attnlab_version": ..., "torch_version": ..., "timm_version": ..., "created": ...},
     "state_dict": {name: tensor}}

written with ``torch.save`` (``.pt``), or as ``.safetensors`` with the same header as JSON
metadata under the key ``attnlab``. It holds only tensors and plain data, and is always
read with ``torch.load(weights_only=True)`` or safetensors: a pickle that would run code
is refused, never executed.

``load_model`` also takes plain state dicts (with a model name), timm model names with
``pretrained=True``, and checkpoints of the official ReViT code.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from . import __version__
from .atomic import atomic_path
from .errors import CheckpointError, ModelNameError
from .load_errors import first_sentence, safetensors_message, unreadable_message
from .paths import PathLike
from .spec import InputSpec, ModelSpec

FORMAT = "attnlab-checkpoint"
FORMAT_VERSION = 1
STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".pth.tar")
_WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema", "module")


@dataclass
class Checkpoint:
    """A checkpoint as read from disk: its spec (when it has one) and its weights."""

    spec: Optional[ModelSpec]
    state_dict: Dict[str, torch.Tensor]
    kind: str  # attnlab | state_dict | official-revit | official-remvitv2 | official-reswin
    path: Path

    @property
    def sha256(self) -> str:
        return file_sha256(self.path)


def file_sha256(path: PathLike, length: int = 12) -> str:
    """Short content hash of a file, to name which checkpoint a result came from."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


# ----------------------------------------------------------------------------- saving

def _arch_and_options(model: nn.Module) -> Tuple[str, Dict[str, Any]]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    arch = cfg.get("architecture")
    options = getattr(model, "_model_args", None)
    if not arch or options is None:
        raise CheckpointError(
            "cannot tell which architecture this model is; build it with attnlab.create_model "
            "(or timm.create_model), or pass arch= and options= to save_checkpoint"
        )
    return arch, dict(options)


def _check_plain(value: Any, where: str) -> None:
    """Metadata must be plain data (what JSON holds) so loading never needs pickle."""
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where} must hold only plain data (str, numbers, lists, dicts): {e}") from None


def default_input_spec(model: nn.Module) -> InputSpec:
    """The input a model expects, from its timm config and its patch embedding."""
    from timm.data import resolve_model_data_config

    cfg = resolve_model_data_config(model)
    pe = getattr(model, "patch_embed", None)
    size = tuple(int(s) for s in cfg["input_size"][1:])
    channels = int(cfg["input_size"][0])
    if pe is not None:
        if getattr(pe, "img_size", None):
            size = tuple(int(s) for s in pe.img_size)
        proj = getattr(pe, "proj", None)
        if proj is not None and hasattr(proj, "in_channels"):
            channels = int(proj.in_channels)
    mean, std = tuple(cfg["mean"]), tuple(cfg["std"])
    if len(mean) != channels:  # e.g. a 1-channel model with RGB defaults: average them
        mean = (sum(mean) / len(mean),) * channels
        std = (sum(std) / len(std),) * channels
    return InputSpec(size=size, channels=channels, mean=mean, std=std,
                     interpolation=cfg.get("interpolation", "bicubic"), crop_pct=float(cfg.get("crop_pct", 1.0)))


def default_classes(model: nn.Module) -> List[str]:
    return [str(i) for i in range(int(getattr(model, "num_classes", 0)))]


def save_checkpoint(
    model: nn.Module,
    path: PathLike,
    *,
    classes: Optional[List[str]] = None,
    input_spec: Optional[InputSpec] = None,
    provenance: Optional[Mapping[str, Any]] = None,
    arch: Optional[str] = None,
    options: Optional[Mapping[str, Any]] = None,
) -> Path:
    """Write a self-describing checkpoint (``.pt``, or ``.safetensors``) atomically.

    ``arch`` and ``options`` default to what the model was built with; ``classes`` to
    "0".."K-1"; ``input_spec`` to the model's timm data config. ``provenance`` (dataset,
    epochs, metrics, seed, ...) is stored with the versions of attnlab, torch and timm.
    """
    import timm

    path = Path(path)
    if arch is None or options is None:
        found_arch, found_options = _arch_and_options(model)
        arch = arch or found_arch
        options = found_options if options is None else options
    options = dict(options)
    classes = list(classes) if classes is not None else default_classes(model)
    num_classes = getattr(model, "num_classes", None)
    if num_classes is not None and num_classes and len(classes) != num_classes:
        raise CheckpointError(f"{len(classes)} class names given for a model with {num_classes} outputs")
    input_spec = input_spec or default_input_spec(model)
    prov = {
        "attnlab_version": __version__,
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    prov.update(provenance or {})
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "options": options,
        "input": input_spec.to_dict(),
        "classes": [str(c) for c in classes],
        "provenance": prov,
    }
    _check_plain(header, "checkpoint metadata")
    header = json.loads(json.dumps(header))  # plain builtins only (no str subclasses, tuples)
    state_dict = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}

    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file({k: v.clone() for k, v in state_dict.items()}, str(tmp),
                      metadata={"attnlab": json.dumps(header)})
        else:
            torch.save({**header, "state_dict": state_dict}, tmp)
    return path


# ----------------------------------------------------------------------------- reading

def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``, silent (torch warns about pickle protocols); failing, one line."""
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises a dozen types for bad files (KeyError, EOFError, ...)
            error = e
    raise CheckpointError(unreadable_message(path, error)) from None


def _read_safetensors(path: Path) -> Tuple[Dict[str, torch.Tensor], Optional[Dict[str, Any]]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(safetensors_message(path, e)) from None
    header = None
    if "attnlab" in meta:
        try:
            header = json.loads(meta["attnlab"])
        except json.JSONDecodeError as e:
            raise CheckpointError(f"cannot read {path}: its attnlab metadata is corrupt ({e})") from None
    return sd, header


def _is_state_dict(obj: Any) -> bool:
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) for k in obj) and all(isinstance(v, torch.Tensor) for v in obj.values()))


def _spec_from_header(header: Mapping[str, Any], path: Path) -> ModelSpec:
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path} is attnlab checkpoint format version {version}; this attnlab "
                              f"({__version__}) reads version {FORMAT_VERSION}: upgrade attnlab")
    try:
        return ModelSpec(
            arch=str(header["arch"]),
            options=dict(header.get("options") or {}),
            input=InputSpec.from_dict(header["input"]),
            classes=[str(c) for c in header["classes"]],
            provenance=dict(header.get("provenance") or {}),
            source=str(path),
            kind="attnlab",
        )
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise CheckpointError(f"cannot read {path}: its attnlab metadata is incomplete ({type(e).__name__}: {e})") from None


def read_checkpoint(path: PathLike) -> Checkpoint:
    """Read a checkpoint file safely without building a model.

    Returns the spec (for attnlab checkpoints) and the state dict; plain state dicts and
    official ReViT checkpoints come back with ``spec=None`` and their ``kind``.
    """
    from .models.official import detect_official

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; pass a checkpoint file (.pt, .pth, .bin, .safetensors)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"cannot read {path}: the file is empty")

    if path.suffix == ".safetensors":
        sd, header = _read_safetensors(path)
        if header is not None:
            return Checkpoint(_spec_from_header(header, path), sd, "attnlab", path)
        obj: Any = sd
    else:
        obj = _torch_load(path)

    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        sd = obj.get("state_dict")
        if not _is_state_dict(sd):
            raise CheckpointError(f"cannot read {path}: its state_dict is missing or not a dict of tensors")
        return Checkpoint(_spec_from_header(obj, path), dict(sd), "attnlab", path)
    official = detect_official(obj)  # ReViT, ReMViTv2 or ReSwin, as the official code wrote them
    if official is not None:
        return Checkpoint(None, official[1], official[0], path)
    if isinstance(obj, Mapping) and not _is_state_dict(obj):
        for key in _WRAPPER_KEYS:
            if _is_state_dict(obj.get(key)):
                obj = obj[key]
                break
    if _is_state_dict(obj):
        return Checkpoint(None, dict(obj), "state_dict", path)
    raise CheckpointError(f"cannot use {path}: it is neither an attnlab checkpoint nor a state dict "
                          "(a dict of parameter names to tensors)")


# ----------------------------------------------------------------------------- fitting

def check_fit(model: nn.Module, state_dict: Mapping[str, torch.Tensor], arch: str, source: str) -> None:
    """Raise one line naming the first missing, unexpected and mis-shaped keys, if any."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    misshaped = [(k, tuple(state_dict[k].shape), tuple(v.shape)) for k, v in expected.items()
                 if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    if not (missing or unexpected or misshaped):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (first: {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (first: {unexpected[0]})")
    if misshaped:
        k, got, want = misshaped[0]
        parts.append(f"{len(misshaped)} mis-shaped (first: {k} is {list(got)} in the file, "
                     f"{list(want)} in the model)")
    raise CheckpointError(f"weights in {source} do not fit {arch}: {'; '.join(parts)}; "
                          "pass the model name and options the weights were trained with")


def _build(arch: str, options: Mapping[str, Any]) -> nn.Module:
    from .models import create_model

    try:
        return create_model(arch, **options)
    except ModelNameError:
        raise
    except (TypeError, ValueError, AssertionError) as e:
        raise CheckpointError(f"cannot build {arch} with options {dict(options)}: {first_sentence(e)}") from None


def _infer_options(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
    """Options a plain ViT-style state dict tells by its shapes: classes and input channels."""
    out: Dict[str, Any] = {}
    head = state_dict.get("head.weight")
    if head is not None and head.ndim == 2:
        out["num_classes"] = int(head.shape[0])
    proj = state_dict.get("patch_embed.proj.weight")
    if proj is not None and proj.ndim == 4:
        out["in_chans"] = int(proj.shape[1])
    return out


def _looks_like_path(source: str) -> bool:
    return os.sep in source or "/" in source or source.endswith(STATE_DICT_SUFFIXES)


def _pretrained(name: str, options: Mapping[str, Any]) -> Tuple[nn.Module, ModelSpec]:
    from .models.factory import create_pretrained

    model = create_pretrained(name, **options)  # one CheckpointError line, fast, when offline
    classes = default_classes(model)
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(model)
        if subset:
            classes = list(ImageNetInfo(subset).label_descriptions())
    except Exception:  # class names are a courtesy; numbered classes stay correct
        pass
    spec = ModelSpec(arch=name.split(".")[0], options=dict(options), input=default_input_spec(model),
                     classes=classes, provenance={"weights": f"timm:{name}"}, source=f"timm:{name}",
                     kind="timm-pretrained")
    return model, spec


def load_model(
    source: PathLike,
    *,
    model: Optional[str] = None,
    pretrained: bool = False,
    official_config: Optional[PathLike] = None,
    device: Union[str, torch.device] = "cpu",
    **options: Any,
) -> Tuple[nn.Module, ModelSpec]:
    """Load a model in eval mode together with its spec (input, classes, provenance).

    ``source`` is one of:
      - an attnlab checkpoint (``.pt`` or ``.safetensors``): enough on its own;
      - a plain state dict (``.pth``, ``.bin``, ``.safetensors``) with ``model=NAME``
        (and ``options``; classes and input channels are read off the weights);
      - a checkpoint of the official ReViT code (architecture inferred from the weights;
        ``official_config`` is its YAML config, needed when the head width is not 64);
      - a timm model name with ``pretrained=True`` (downloads from the hub).
    Bad input raises :class:`attnlab.CheckpointError` (or ``ModelNameError``) with one line.
    """
    source_str = os.fspath(source)
    path = Path(source_str)
    from .models.hf import is_hf_source, load_hf_model
    if is_hf_source(source_str):  # hf:DIR_OR_ID, or a save_pretrained folder
        return tuple(load_hf_model(source_str, device))
    if not path.exists():
        if pretrained:
            net, spec = _pretrained(source_str, options)
            return net.to(device).eval(), spec
        if _looks_like_path(source_str):
            raise CheckpointError(f"checkpoint not found: {source_str}")
        from .models import resolve_model_name

        resolve_model_name(source_str)  # raises for unknown names, with suggestions
        raise CheckpointError(f"{source_str!r} is a model name, not a file: add --pretrained to load its "
                              "published weights, or pass a checkpoint file")
    if pretrained:
        raise CheckpointError(f"--pretrained takes a timm model name, but {source_str} is a file; drop --pretrained")

    from .models.official import convert_official, official_for_model

    ckpt = read_checkpoint(path)
    if ckpt.kind == "attnlab":
        spec = ckpt.spec
        assert spec is not None
        if model is not None and model.split(".")[0] != spec.arch:
            raise CheckpointError(f"{path} holds a {spec.arch}, not a {model}; drop --model (the checkpoint names its model)")
        if options:
            raise CheckpointError(f"{path} records its model options; drop the extra options {sorted(options)}")
        state_dict = ckpt.state_dict
    elif ckpt.kind.startswith("official-") or official_for_model(ckpt.state_dict, model):
        kind = ckpt.kind if ckpt.kind.startswith("official-") else official_for_model(ckpt.state_dict, model)
        spec, state_dict = convert_official(kind, ckpt.state_dict, official_config, str(path))
    else:
        if model is None:
            raise CheckpointError(f"{path} is a plain state dict without an architecture; "
                                  "pass the model name with --model NAME (see `attnlab models`)")
        inferred = _infer_options(ckpt.state_dict)
        inferred.update(options)
        net = _build(model, inferred)
        from .models import checkpoint_filter_fn

        state_dict = checkpoint_filter_fn(dict(ckpt.state_dict), net) if hasattr(net, "patch_embed") else ckpt.state_dict
        spec = ModelSpec(arch=model.split(".")[0], options=inferred, input=default_input_spec(net),
                         classes=default_classes(net), provenance={"weights": str(path)}, source=str(path),
                         kind="state_dict")
        check_fit(net, state_dict, spec.arch, str(path))
        net.load_state_dict(state_dict)
        return net.to(device).eval(), spec

    net = _build(spec.arch, spec.options)
    check_fit(net, state_dict, spec.arch, str(path))
    net.load_state_dict(state_dict)
    return net.to(device).eval(), spec
