"""What a run folder may hold: a new run never overwrites one, and a resume continues it as configured."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping

from ..errors import AttnlabError, plural
from .config import RUNTIME_KEYS, TrainConfig
from .state import STATE_FILE, load_state

#: Files whose presence means a folder already holds a training run.
RUN_FILES = (STATE_FILE, "last.pt", "best.pt", "metrics.csv")


def check_new_run(out: Path) -> None:
    """A new run goes into a folder (or a path to be made) that holds no run yet."""
    if out.exists() and not out.is_dir():
        raise AttnlabError(f"--out {out} is a file, not a folder")
    found = [n for n in RUN_FILES if (out / n).exists()]
    if found:
        raise AttnlabError(f"{out} already holds a training run ({found[0]}); pass --resume to continue it, "
                           "or choose another --out")


def resumable_state(out: Path) -> Dict[str, Any]:
    """The resume state of an unfinished run in ``out`` (or one line saying why there is none)."""
    state = load_state(out)
    if state.get("finished"):
        raise AttnlabError(f"nothing to resume: the run in {out} already finished all "
                           f"{plural(state['config']['epochs'], 'epoch')}")
    return state


def check_same_run(config: TrainConfig, saved: Mapping[str, Any], out: Path) -> None:
    """A resumed run computes what the saved one did: every option but the runtime ones agrees."""
    for key, value in config.to_dict().items():
        if key not in RUNTIME_KEYS and key in saved and saved[key] != value:
            raise AttnlabError(f"cannot resume the run in {out} with a different {key} ({saved[key]!r} "
                               f"there, {value!r} here); resume with its own config or start a new run")


def config_for_resume(out_dir: Path, explicit: Mapping[str, Any]) -> TrainConfig:
    """The saved config of the run in ``out_dir``, with the explicitly given runtime keys.

    Options that change the numbers (model, lr, epochs...) cannot change on resume: a
    different value is an error rather than a silently different run.
    """
    state = load_state(out_dir)
    cfg = TrainConfig.from_mapping(state["config"], f"{out_dir / STATE_FILE}")
    for key, value in explicit.items():
        if key in RUNTIME_KEYS:
            setattr(cfg, key, value)
        elif getattr(cfg, key) != value:
            raise AttnlabError(f"--resume continues the run in {out_dir} as configured; {key} was "
                               f"{getattr(cfg, key)!r} there, {value!r} here (drop it, or start a new run with "
                               "another --out)")
    cfg.out = str(out_dir)
    return cfg
