"""Kill a training run with SIGKILL in the middle of its first epoch (the exact-resume tests)."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

from attnlab.cli import app


def _cli_child(args) -> None:
    app(args=args, prog_name="attnlab")


def kill_mid_epoch(args: list, out: Path, min_step: int, timeout: float) -> dict:
    """Run ``attnlab`` with ``args`` in a forked child, SIGKILL it once its resume state is at step
    ``min_step`` or later of epoch 0, and return that state (asserting the kill really came mid-run)."""
    child = multiprocessing.get_context("fork").Process(target=_cli_child, args=(args,))
    child.start()
    info_path = out / "resume.json"
    deadline = time.time() + timeout
    seen = None
    while child.is_alive() and time.time() < deadline:
        if info_path.exists():
            try:
                seen = json.loads(info_path.read_text())
            except ValueError:
                seen = None
            if seen and seen["epoch"] == 0 and seen["step"] >= min_step:
                os.kill(child.pid, signal.SIGKILL)
                break
        time.sleep(0.01)
    child.join(30)
    assert child.exitcode == -signal.SIGKILL, f"child was not killed mid-run (exit {child.exitcode}, saw {seen})"
    return json.loads(info_path.read_text())
