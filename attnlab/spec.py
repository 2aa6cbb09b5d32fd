"""What a model expects as input and what it is: the metadata a checkpoint carries."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Tuple


@dataclass(frozen=True)
class InputSpec:
    """How images must be prepared for a model: size, channels, normalisation."""

    size: Tuple[int, int]
    channels: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    interpolation: str = "bicubic"
    crop_pct: float = 1.0

    def to_dict(self) -> Dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "InputSpec":
        size = d["size"]
        size = (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[1]))
        return cls(
            size=size,
            channels=int(d["channels"]),
            mean=tuple(float(m) for m in d["mean"]),
            std=tuple(float(s) for s in d["std"]),
            interpolation=str(d.get("interpolation", "bicubic")),
            crop_pct=float(d.get("crop_pct", 1.0)),
        )


@dataclass
class ModelSpec:
    """Everything needed to rebuild and use a model, besides its weights.

    ``arch`` and ``options`` rebuild the module (``attnlab.create_model(arch, **options)``);
    ``input`` says how to feed it; ``classes`` name its outputs; ``provenance`` says where
    the weights came from (dataset, epochs, metrics, seed, versions).
    """

    arch: str
    options: Dict[str, Any]
    input: InputSpec
    classes: List[str]
    provenance: Dict[str, Any] = field(default_factory=dict)
    source: str = ""
    kind: str = "attnlab"  # attnlab | state_dict | official-revit | timm-pretrained | init

    @property
    def family(self) -> str:
        from .models.zoo import family_of  # light: no torch needed to read a name

        return family_of(self.arch)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "arch": self.arch,
            "options": dict(self.options),
            "input": self.input.to_dict(),
            "classes": list(self.classes),
            "provenance": dict(self.provenance),
        }
