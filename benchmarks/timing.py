"""Clocks shared by the benchmark scripts.

On a shared, busy CPU the wall clock mostly measures the neighbours (and OpenMP threads
spinning for cores they do not get). By default the benchmarks therefore run torch on one
thread and time process CPU time (``--clock cpu``): the work each loop does, which is what
their ratios are about. ``--clock wall [--threads N]`` times the wall clock instead.
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

import torch

CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def add_clock_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="cpu",
                        help="cpu: process CPU time on one thread (robust on shared machines); wall: wall clock")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default 1 with --clock cpu)")


def setup_clock(args: argparse.Namespace) -> Callable[[], float]:
    """Set torch's thread count from the options and return the chosen clock."""
    threads = args.threads or (1 if args.clock == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.clock} clock")
    return CLOCKS[args.clock]


def best_of(fn: Callable[[], object], clock: Callable[[], float], repeats: int = 3) -> float:
    """Shortest of ``repeats`` timings of ``fn()``: the run least disturbed by the machine."""
    times = []
    for _ in range(repeats):
        t = clock()
        fn()
        times.append(clock() - t)
    return min(times)
