"""Hugging Face ``transformers`` vision transformers as attnlab models: a local ``save_pretrained``
folder (offline) or a hub id (online), ``hf:DIR_OR_ID`` or a folder with a ``config.json``.

The model is wrapped so that ``model(x)`` returns logits (or, for a backbone without a head,
the class token's final features), and so that attnlab can read its token layout: the
patch grid from ``config.patch_size``, and the prefix tokens (class token, DeiT's
distillation token, DINOv2's registers). Its input spec comes from the folder's image
processor config (mean, std, size) when there is one, else from ``config.image_size`` with
the ImageNet defaults. ``transformers`` is optional (``pip install attnlab[hf]``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Tuple, Union

import torch
from torch import nn

from ..errors import CheckpointError, one_line
from ..layout import TokenLayout
from ..spec import InputSpec, ModelSpec

PREFIX = "hf:"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def is_hf_source(source: str) -> bool:
    """``hf:...``, or a folder holding a ``config.json`` (a ``save_pretrained`` folder)."""
    return source.startswith(PREFIX) or (Path(source).is_dir() and (Path(source) / "config.json").is_file())


class HFVisionModel(nn.Module):
    """A Hugging Face vision transformer that takes ``[B, C, H, W]`` and returns logits."""

    def __init__(self, hf: nn.Module) -> None:
        super().__init__()
        self.hf = hf
        self.config = hf.config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.hf(pixel_values=x)
        logits = getattr(out, "logits", None)
        if logits is not None:
            return logits
        pooled = getattr(out, "pooler_output", None)
        return pooled if pooled is not None else out.last_hidden_state[:, 0]

    @property
    def num_classes(self) -> int:
        head = getattr(self.hf, "classifier", None)
        return int(getattr(head, "out_features", 0) or 0)

    def token_layout(self, img_size: Optional[Union[int, Tuple[int, int]]] = None) -> TokenLayout:
        """Prefix tokens (class, distillation, registers) and the patch grid at ``img_size``."""
        cfg = self.config
        patch = int(cfg.patch_size)
        size = img_size if img_size is not None else cfg.image_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        prefix = 1 + int(getattr(cfg, "num_register_tokens", 0) or 0)
        if cfg.model_type == "deit":
            prefix += 1  # the distillation token
        return TokenLayout(num_prefix_tokens=prefix, grid_size=(h // patch, w // patch), patch_size=(patch, patch))


def _input_spec(folder: Optional[Path], config: Any) -> InputSpec:
    size = config.image_size
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    processor = folder / "preprocessor_config.json" if folder is not None else None
    if processor is not None and processor.is_file():
        data = json.loads(processor.read_text())
        mean = tuple(data.get("image_mean", mean))
        std = tuple(data.get("image_std", std))
        s = data.get("crop_size") or data.get("size") or {}
        if isinstance(s, dict) and "height" in s:
            size = (int(s["height"]), int(s["width"]))
        elif isinstance(s, dict) and "shortest_edge" in s:
            size = int(s["shortest_edge"])
        elif isinstance(s, int):
            size = s
    size = (size, size) if isinstance(size, int) else tuple(size)
    channels = int(getattr(config, "num_channels", 3))
    return InputSpec(size=size, channels=channels, mean=tuple(mean)[:channels] * (channels // len(mean[:channels])),
                     std=tuple(std)[:channels] * (channels // len(std[:channels])), interpolation="bicubic")


def load_hf_model(source: str, device: Union[str, torch.device] = "cpu") -> Tuple[nn.Module, ModelSpec]:
    """Load ``hf:DIR_OR_ID`` (or a ``save_pretrained`` folder) in eval mode on ``device``, with its spec."""
    try:
        import transformers
    except ImportError:
        raise CheckpointError("Hugging Face models need transformers: pip install 'attnlab[hf]'") from None
    name = source[len(PREFIX):] if source.startswith(PREFIX) else source
    folder = Path(name) if Path(name).is_dir() else None
    if folder is not None and not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder} has no config.json; pass a folder written by save_pretrained")
    if folder is not None and not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise CheckpointError(f"{folder} has a config.json but no weights (*.safetensors or *.bin); "
                              "save the model with save_pretrained, not only its config")
    try:
        config = transformers.AutoConfig.from_pretrained(name, local_files_only=folder is not None)
        heads = (transformers.AutoModelForImageClassification, transformers.AutoModel)
        auto = heads[0] if config.architectures and any("ImageClassification" in a for a in config.architectures) \
            else heads[1]
        bars = transformers.utils.logging.is_progress_bar_enabled()
        transformers.utils.logging.disable_progress_bar()  # the command's output stays attnlab's
        try:
            hf = auto.from_pretrained(name, local_files_only=folder is not None)
        finally:
            if bars:
                transformers.utils.logging.enable_progress_bar()
    except Exception as e:  # an unknown id offline, a broken folder: one line
        raise CheckpointError(f"could not load the Hugging Face model {name}: {type(e).__name__}: "
                              f"{one_line(e)[:300]}") from None
    if getattr(hf.config, "model_type", "") == "clip":
        hf = hf.vision_model if hasattr(hf, "vision_model") else hf
    model = HFVisionModel(hf).to(device).eval()
    labels = getattr(hf.config, "id2label", None) or {}
    classes = [str(labels[i]) for i in sorted(labels)] if model.num_classes else []
    spec = ModelSpec(arch=f"hf:{hf.config.model_type}", options={}, input=_input_spec(folder, hf.config),
                     classes=classes, provenance={"weights": name}, source=name, kind="hf")
    return model, spec
