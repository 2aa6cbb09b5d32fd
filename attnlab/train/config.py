"""Training options: one dataclass, filled from defaults < YAML file < command-line flags.

The defaults train small ViTs from scratch on small data (AdamW, warm-up + cosine,
gradient clipping, crops and flips). The regularisation that suits long runs only
(label smoothing, drop-path, RandAugment, mixup, cutmix) is left unset (``None``, or
``"auto"`` for ``randaugment``) and filled by a recipe when the run starts
(``attnlab.train.recipe``: ``short`` for runs under 2,000 steps, else ``long``); a value
the user gives always wins. Every augmentation can be switched off one by one, or all at
once with ``augment: false``. ``data`` says whether the training images are held in
memory or streamed from disk (``auto``: in memory when they fit ``memory_budget_gb``);
``workers``, ``amp_dtype`` and ``compile`` tune the streamed and GPU paths. This module
imports no torch, so the CLI can validate a config instantly.
"""
from __future__ import annotations

import difflib
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, get_type_hints

from ..errors import AttnlabError
from ..paths import PathLike

#: Keys that may change when a run is resumed (they do not change the numbers it computes).
RUNTIME_KEYS = frozenset({"data_dir", "download", "device", "out", "progress", "threads", "save_every", "workers",
                          "memory_budget_gb"})

PROGRESS_MODES = ("auto", "on", "off")
DEVICES = ("auto", "cpu", "cuda")
AUTO = "auto"
RECIPE_CHOICES = (AUTO, "short", "long")  # what each sets: attnlab.train.recipe.RECIPES
DATA_MODES = (AUTO, "memory", "stream")  # how training reads its images: attnlab.train.loader
AMP_DTYPES = (AUTO, "bf16", "fp16")      # with amp on; --amp off is amp: false (attnlab.train.accel)


@dataclass
class TrainConfig:
    """Every training option; see the field comments for what each one does and why."""

    # what to train on what
    model: Optional[str] = None              # registered model name, e.g. revit_micro_patch4_32
    dataset: str = "fashion-mnist"           # a name attnlab.data.load_dataset knows
    data_dir: Optional[str] = None           # where the dataset lives (its official layout)
    download: bool = False                   # let the loader download a missing dataset
    subset: Optional[int] = None             # train on the first N training images only
    eval_split: str = "test"                 # the held-out split evaluated after every epoch
    eval_subset: Optional[int] = None        # evaluate the first N images of eval_split each epoch (default all)
    out: Optional[str] = None                # run folder; default runs/<model>_<dataset>
    # schedule
    epochs: int = 50
    batch_size: int = 128                    # global batch (split over all processes)
    lr: float = 1e-3                         # peak learning rate (after warm-up)
    min_lr: float = 1e-5                     # end of the cosine schedule
    warmup_epochs: float = 5.0               # linear warm-up; at most a fifth of the run
    weight_decay: float = 0.05               # AdamW; never on 1-D params, ReViT's a, pos/cls tokens
    clip_grad: float = 1.0                   # max global grad norm; 0 = no clipping
    # regularisation and augmentation; None (randaugment: auto) = the recipe's value (long / short)
    recipe: str = AUTO                       # auto (short below 2,000 steps, else long) | short | long
    label_smoothing: Optional[float] = None  # long 0.1, short 0
    drop_path: Optional[float] = None        # stochastic depth rate; long 0.1, short 0
    augment: bool = True                     # false switches every augmentation below off
    randaugment: Optional[str] = AUTO        # timm-style "rand-m<M>-n<N>"; none = off; long rand-m9-n2, short off
    crop_padding: int = 4                    # random crop after zero-padding this many pixels; 0 = off
    hflip: float = 0.5                       # horizontal flip probability; 0 = off
    crop_scale: float = 0.08                 # streamed data: random-resized-crop keeps crop_scale..1 of the area
    random_erasing: float = 0.0              # chance an image gets one random-erasing box (timm, pixel mode); 0 = off
    mixup: Optional[float] = None            # mixup alpha; 0 = off; long 0.8, short 0
    cutmix: Optional[float] = None           # cutmix alpha; 0 = off; long 1.0, short 0
    mixup_prob: float = 1.0                  # chance a batch is mixed at all
    mixup_switch_prob: float = 0.5           # chance of cutmix instead of mixup when both are on
    ema: bool = False                        # keep an EMA of the weights (evaluated and saved instead)
    ema_decay: float = 0.999
    amp: bool = True                         # mixed precision; only ever used on a GPU
    amp_dtype: str = AUTO                    # with amp: auto (bf16 where the GPU has it, else fp16) | bf16 | fp16
    compile: bool = False                    # torch.compile the model (the checkpoints stay plain state dicts)
    # run control
    seed: int = 0
    device: str = "auto"                     # auto | cpu | cuda
    eval_batch_size: int = 256
    data: str = AUTO                         # auto (in memory when it fits memory_budget_gb) | memory | stream
    workers: Optional[int] = None            # DataLoader processes for streamed data (default min(8, CPUs))
    memory_budget_gb: Optional[float] = None  # what the in-memory images may take (default a quarter of the RAM)
    save_every: int = 50                     # write the resume state every K steps (and every epoch end); 0 = epoch ends only
    threads: Optional[int] = None            # torch CPU threads for this run (default: torch's choice)
    progress: str = "auto"                   # progress bar: auto (when stderr is a terminal) | on | off
    model_options: Optional[str] = None      # extra model options "key=value,...", e.g. alpha=0.25,learn_alpha=false
    keep_epochs: Optional[str] = None        # also keep epoch_<k>.pt after these epochs: "1,2,4" or "all"

    # ------------------------------------------------------------------ conversions
    def to_dict(self) -> Dict[str, Any]:
        """Plain data (for checkpoints, resume state and YAML)."""
        return asdict(self)

    @classmethod
    def keys(cls) -> list:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], source: str = "config") -> "TrainConfig":
        """Build from plain values, coercing types and refusing unknown keys with one line."""
        cfg = cls()
        cfg.update(values, source)
        return cfg

    def update(self, values: Mapping[str, Any], source: str = "config") -> "TrainConfig":
        """Set the given keys (type-checked); ``source`` names where they came from in errors."""
        hints = get_type_hints(type(self))
        known = self.keys()
        for raw_key, value in values.items():
            key = str(raw_key).replace("-", "_")
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean {close[0]}?" if close else ""
                raise AttnlabError(f"unknown option {raw_key!r} in {source}{hint} (known: {', '.join(known)})")
            if key == "amp" and isinstance(value, str) and value.strip().lower() in AMP_DTYPES:
                self.amp, self.amp_dtype = True, value.strip().lower()  # amp: bf16 means amp on, in bf16
                continue
            setattr(self, key, _coerce(value, hints[key], key, source))
        return self

    # ------------------------------------------------------------------ checks
    def validate(self) -> "TrainConfig":
        """Raise one line for the first option that cannot work; returns self."""
        if not self.model:
            raise AttnlabError("no model given: pass --model NAME (see `attnlab models`) or set model: in the config file")
        _at_least("epochs", self.epochs, 1)
        _at_least("batch_size", self.batch_size, 1)
        _at_least("eval_batch_size", self.eval_batch_size, 1)
        for name in ("subset", "eval_subset", "threads"):
            if getattr(self, name) is not None:
                _at_least(name, getattr(self, name), 1)
        _at_least("save_every", self.save_every, 0)
        _at_least("crop_padding", self.crop_padding, 0)
        _at_least("seed", self.seed, 0)
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise AttnlabError(f"lr must be a positive number, not {self.lr}")
        for name in ("min_lr", "weight_decay", "clip_grad", "warmup_epochs", "mixup", "cutmix", "drop_path"):
            v = getattr(self, name)
            if v is not None and not (v >= 0 and math.isfinite(v)):
                raise AttnlabError(f"{name} must be a number >= 0, not {v}")
        for name in ("label_smoothing", "hflip", "mixup_prob", "mixup_switch_prob"):
            v = getattr(self, name)
            if v is not None and not 0 <= v <= 1:
                raise AttnlabError(f"{name} must be between 0 and 1, not {v}")
        if self.drop_path is not None and self.drop_path >= 1:
            raise AttnlabError(f"drop_path must be below 1, not {self.drop_path}")
        if not 0 <= self.ema_decay < 1:
            raise AttnlabError(f"ema_decay must be in [0, 1), not {self.ema_decay}")
        if self.device not in DEVICES:
            raise AttnlabError(f"device must be one of {', '.join(DEVICES)}, not {self.device!r}")
        if self.progress not in PROGRESS_MODES:
            raise AttnlabError(f"progress must be one of {', '.join(PROGRESS_MODES)}, not {self.progress!r}")
        if self.recipe not in RECIPE_CHOICES:
            raise AttnlabError(f"recipe must be one of {', '.join(RECIPE_CHOICES)}, not {self.recipe!r}")
        if self.randaugment not in (None, AUTO):
            parse_randaugment(self.randaugment)
        if self.data not in DATA_MODES:
            raise AttnlabError(f"data must be one of {', '.join(DATA_MODES)}, not {self.data!r}")
        if self.amp_dtype not in AMP_DTYPES:
            raise AttnlabError(f"amp must be one of {', '.join(AMP_DTYPES)} or off, not {self.amp_dtype!r}")
        if self.workers is not None:
            _at_least("workers", self.workers, 0)
        if not 0 < self.crop_scale <= 1:
            raise AttnlabError(f"crop_scale must be in (0, 1], not {self.crop_scale}")
        if not 0 <= self.random_erasing <= 1:
            raise AttnlabError(f"random_erasing must be between 0 and 1, not {self.random_erasing}")
        if self.memory_budget_gb is not None and not (self.memory_budget_gb >= 0 and math.isfinite(self.memory_budget_gb)):
            raise AttnlabError(f"memory_budget_gb must be a number >= 0, not {self.memory_budget_gb}")
        self.parsed_model_options()
        self.kept_epochs()
        return self

    def parsed_model_options(self) -> Dict[str, Any]:
        """``model_options`` as keyword arguments (numbers, true/false and words)."""
        out: Dict[str, Any] = {}
        for item in (self.model_options or "").split(","):
            if not item.strip():
                continue
            key, sep, raw = item.partition("=")
            if not sep or not key.strip():
                raise AttnlabError(f"model_options must be key=value pairs separated by commas, not {item!r}")
            raw = raw.strip()
            value: Any = raw
            if raw.lower() in ("true", "false"):
                value = raw.lower() == "true"
            else:
                for cast in (int, float):
                    try:
                        value = cast(raw)
                        break
                    except ValueError:
                        pass
            out[key.strip()] = value
        return out

    def kept_epochs(self) -> frozenset:
        """Epochs whose checkpoint is kept as ``epoch_<k>.pt`` besides last/best."""
        text = (self.keep_epochs or "").strip().lower()
        if text == "all":
            return frozenset(range(1, self.epochs + 1))
        try:
            epochs = frozenset(int(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise AttnlabError(f"keep_epochs must be 'all' or comma-separated epoch numbers, not {self.keep_epochs!r}") from None
        if any(e < 1 for e in epochs):
            raise AttnlabError(f"keep_epochs are epoch numbers from 1, not {self.keep_epochs!r}")
        return epochs

    # ------------------------------------------------------------------ derived
    @property
    def out_dir(self) -> Path:
        """The run folder (default ``runs/<model>_<dataset>``)."""
        return Path(self.out) if self.out else Path("runs") / f"{self.model}_{self.dataset}"

    @property
    def mixing(self) -> bool:
        """Whether batches are mixed (mixup or cutmix); options left to the recipe count as off."""
        return self.augment and ((self.mixup or 0) > 0 or (self.cutmix or 0) > 0) and self.mixup_prob > 0


def parse_randaugment(spec: str) -> Tuple[int, int]:
    """``"rand-m9-n2"`` -> (magnitude 9 of 10, 2 ops per image), timm's notation."""
    parts = str(spec).strip().lower().split("-")
    magnitude, num_ops = 9, 2
    if parts[0] != "rand":
        raise AttnlabError(f"randaugment must look like 'rand-m9-n2' (or none), not {spec!r}")
    for part in parts[1:]:
        try:
            if part.startswith("m"):
                magnitude = int(part[1:])
            elif part.startswith("n"):
                num_ops = int(part[1:])
            else:
                raise ValueError(part)
        except ValueError:
            raise AttnlabError(f"randaugment {spec!r}: only m<magnitude 0..10> and n<ops> are supported, "
                               f"not {part!r}") from None
    if not 0 <= magnitude <= 10 or num_ops < 1:
        raise AttnlabError(f"randaugment {spec!r}: magnitude must be 0..10 and ops >= 1")
    return magnitude, num_ops


def _at_least(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise AttnlabError(f"{name} must be a whole number >= {low}, not {value!r}")


_NONE_WORDS = ("none", "null", "off", "")


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """Bring a YAML / CLI value to the field's type, or raise one line."""
    optional = getattr(hint, "__args__", None) is not None and type(None) in hint.__args__
    base = next((a for a in getattr(hint, "__args__", (hint,)) if a is not type(None)), hint)
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in _NONE_WORDS):
        if optional:
            return None
        raise AttnlabError(f"option {key} in {source} needs a value")
    bad = AttnlabError(f"option {key} in {source} must be {_type_name(base)}, not {value!r}")
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.strip().lower() in ("true", "yes", "on", "1")
        raise bad
    if base in (int, float):
        if isinstance(value, str):
            try:
                value = base(value.strip())
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if base is int and isinstance(value, float) and not value.is_integer():
            raise bad
        return base(value)
    if base is str:
        if isinstance(value, bool):  # YAML 1.1 reads bare on/off/yes/no as booleans
            if optional and value is False:
                return None
            return "on" if value else "off"
        if isinstance(value, (str, os.PathLike)):
            return os.fspath(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad
    return value


def _type_name(t: Any) -> str:
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}.get(t, str(t))


def read_config_file(path: PathLike) -> Dict[str, Any]:
    """Read a YAML config (``yaml.safe_load``): a mapping of option names to values."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise AttnlabError(f"config file not found: {p}" if not p.exists() else f"config {p} is a folder, not a YAML file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = " ".join(str(e).split())
        raise AttnlabError(f"cannot read config {p}: not valid YAML ({first[:200]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise AttnlabError(f"config {p} must be a mapping of option: value, found a {type(data).__name__}")
    return data


def resolve_config(config_file: Optional[PathLike] = None, overrides: Optional[Mapping[str, Any]] = None) -> TrainConfig:
    """Defaults, then the YAML file, then explicit overrides (the CLI flags that were given)."""
    cfg = TrainConfig()
    if config_file is not None:
        cfg.update(read_config_file(config_file), f"config file {config_file}")
    cfg.update({k: v for k, v in (overrides or {}).items() if v is not None}, "the command line")
    return cfg


def explicit_values(config_file: Optional[PathLike] = None, overrides: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Just the keys a user set (file and flags), type-checked: what a resume may compare."""
    values: Dict[str, Any] = {}
    probe = TrainConfig()
    if config_file is not None:
        raw = read_config_file(config_file)
        probe.update(raw, f"config file {config_file}")
        values.update({str(k).replace("-", "_"): getattr(probe, str(k).replace("-", "_")) for k in raw})
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    probe.update(given, "the command line")
    values.update({k: getattr(probe, k) for k in given})
    raw_amp = {**(raw if config_file is not None else {}), **given}.get("amp")
    if isinstance(raw_amp, str) and raw_amp.strip().lower() in AMP_DTYPES:  # amp: bf16 sets amp_dtype too
        values["amp_dtype"] = probe.amp_dtype
    return values
