"""DataLoader worker plumbing the trainer and the studies share: how many, errors, shutdown.

A worker's AttnlabError reaches the main process wrapped in the worker's traceback ("Caught
AttnlabError in DataLoader worker process 0. Original Traceback ..."): :func:`drain` gives
it back as the one line it was, the same type, and stops the workers at once instead of
leaving them to the garbage collector (an iterator kept alive by a traceback waits out a 5 s
timeout per worker).
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Iterator

from ..errors import AttnlabError


def default_workers() -> int:
    """DataLoader processes when none are asked for: min(8, the CPU cores of this process's share of
    the machine), at least 1; under torchrun the cores are shared by ``LOCAL_WORLD_SIZE`` processes."""
    try:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local = 1
    return max(1, min(8, (os.cpu_count() or 1) // local))


def worker_message(e: AttnlabError) -> str:
    """The one-line message of an AttnlabError a DataLoader worker raised."""
    lines = str(e).strip().splitlines()
    if len(lines) > 1 and lines[0].startswith("Caught "):
        last = lines[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return str(e)


def stop_workers(it: Any) -> None:
    """Shut a DataLoader iterator's workers down now (a no-op for other iterators)."""
    shutdown = getattr(it, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


def drain(loader: Iterable, stop: bool = True) -> Iterator:
    """Iterate ``loader``; a worker's AttnlabError comes out as its own one line, and (``stop``) the
    workers are stopped at once when the iteration ends (an error, or the caller closing the
    generator). ``stop=False`` for persistent workers that outlive one pass (the trainer's epochs)."""
    it = iter(loader)
    error = None
    try:
        yield from it
    except AttnlabError as e:
        error = AttnlabError(worker_message(e))
    finally:
        if stop:
            stop_workers(it)
    if error is not None:
        raise error from None
