"""What an exact resume needs: RNG states as plain data, per-step seeds, atomic files.

The resume state is read back with ``torch.load(weights_only=True)``, so it may hold only
tensors and plain Python data: numpy's and Python's RNG states are converted to lists and
tensors here (never pickled as objects).

Reproducibility does not hinge on saving RNG streams mid-flight: every training step
reseeds torch, numpy, Python and the augmentation generator from
``(seed, epoch, step, rank)``, so step k draws the same random numbers whether the run
got there in one go or after a resume (and with any number of processes, each rank
draws its own). The states are still saved and restored, so code that draws outside a
step (a user hook, a library) resumes exactly too.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from ..atomic import atomic_path
from ..errors import AttnlabError
from ..paths import PathLike

STATE_FORMAT = "attnlab-train-state"
STATE_VERSION = 1
STATE_FILE = "resume.pt"
STATE_INFO_FILE = "resume.json"


# ----------------------------------------------------------------------------- seeds
def derive_seeds(*key: int) -> Tuple[int, int, int]:
    """Independent (torch 64-bit, numpy 32-bit, python 64-bit) seeds for a key tuple."""
    words = np.random.SeedSequence([int(k) for k in key]).generate_state(5, dtype=np.uint32)
    w = [int(x) for x in words]
    return (w[0] << 32) | w[1], w[2], (w[3] << 32) | w[4]


_STEP_TAG, _EPOCH_TAG = 1, 2


def seed_rngs(*key: int, devices: bool = False) -> int:
    """Seed torch's CPU RNG (every device's too with ``devices``), numpy's and Python's from
    ``derive_seeds(*key)``; returns the torch seed."""
    t, n, p = derive_seeds(*key)
    (torch.manual_seed if devices else torch.random.default_generator.manual_seed)(t)
    np.random.seed(n)               # timm's Mixup draws lambda with numpy
    random.seed(p)
    return t


def seed_step(seed: int, epoch: int, step: int, rank: int, generator: torch.Generator) -> None:
    """Seed every RNG a training step uses from (seed, epoch, step, rank)."""
    t = seed_rngs(seed, _STEP_TAG, epoch, step, rank, devices=True)  # drop-path, dropout: CPU and every GPU
    generator.manual_seed(t ^ 0x5DEECE66D)  # the augmentation generator


def seed_all(seed: int) -> None:
    """Seed torch, numpy and Python at the start of a run (model initialisation)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def epoch_permutation(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The data order of one epoch: a permutation of range(n) from a seeded generator."""
    g = torch.Generator().manual_seed(derive_seeds(seed, _EPOCH_TAG, epoch)[0])
    return torch.randperm(n, generator=g)


# ----------------------------------------------------------------------------- RNG states
def capture_rng(generator: Optional[torch.Generator] = None) -> Dict[str, Any]:
    """Every RNG state as tensors and plain data (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, pstate, gauss_next = random.getstate()
    out: Dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": [int(x) for x in pstate],
                   "gauss_next": None if gauss_next is None else float(gauss_next)},
    }
    if generator is not None:
        out["augment"] = generator.get_state()
    return out


def restore_rng(state: Dict[str, Any], generator: Optional[torch.Generator] = None) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        for i, s in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)
    npst = state["numpy"]
    np.random.set_state((npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    if generator is not None and "augment" in state:
        generator.set_state(state["augment"])


# ----------------------------------------------------------------------------- files
def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    """torch.save to a temporary file in the same folder, then rename over ``path``."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write text atomically (metrics.csv, resume.json): readers never see half a file."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def save_state(state: Dict[str, Any], out_dir: PathLike) -> Path:
    """Write the resume state (``resume.pt``) and a small human-readable ``resume.json``."""
    out_dir = Path(out_dir)
    path = atomic_torch_save({"format": STATE_FORMAT, "format_version": STATE_VERSION, **state}, out_dir / STATE_FILE)
    info = {k: state[k] for k in ("epoch", "step", "global_step", "steps_per_epoch", "finished") if k in state}
    atomic_write_text(out_dir / STATE_INFO_FILE, json.dumps(info) + "\n")
    return path


def load_state(out_dir: PathLike) -> Dict[str, Any]:
    """Read ``resume.pt`` safely (weights_only=True), or raise one line saying why not."""
    path = Path(out_dir) / STATE_FILE
    if not path.is_file():
        raise AttnlabError(f"nothing to resume: no {STATE_FILE} in {out_dir} (start the run without --resume)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, corrupt, or holds objects weights_only refuses
        first = " ".join(str(e).split())[:200]
        raise AttnlabError(f"cannot resume from {path}: the file is unreadable ({first})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise AttnlabError(f"cannot resume from {path}: not an attnlab training state")
    if state.get("format_version") != STATE_VERSION:
        raise AttnlabError(f"cannot resume from {path}: state format version {state.get('format_version')}, "
                           f"this attnlab reads {STATE_VERSION}")
    return state
