"""Clocks shared by the benchmark scripts.

On a shared, busy CPU the wall clock mostly measures the neighbours (and OpenMP threads
spinning for cores they do not get). By default the benchmarks therefore run torch on one
thread and time process CPU time (``--clock cpu``): the work each loop does, which is what
their ratios are about. ``--clock wall [--threads N]`` times the wall clock instead.
"""
from __future__ import annotations

import argparse
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

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


@contextmanager
def attention_fused(model: nn.Module, fused: bool) -> Iterator[None]:
    """timm attention layers fused (``scaled_dot_product_attention``) or explicit inside the block;
    fused again after it, as timm builds them."""
    layers = [m for m in model.modules() if hasattr(m, "fused_attn")]
    for m in layers:
        m.fused_attn = fused
    try:
        yield
    finally:
        for m in layers:
            m.fused_attn = True
