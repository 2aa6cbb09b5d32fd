"""Translation and scale robustness: exact pixel-space transforms, protocols and metrics.

    result = measure_robustness(["vit.pt", "revit.pt"], dataset="fashion-mnist", shifts=[0, 4, 8])
    result.save("out/robustness")

    transforms   shift, scale (pixel-exact, in [0, 1] pixel space)
    conditions   which views a protocol compares (sweep, revit-random, consistency)
    statistics   per-image metrics, the tidy summary, bootstrap intervals
    run          every condition of a batch in one forward pass, fed batch by batch
    study        measure_robustness and its result
"""
from .conditions import DIRECTIONS, PROTOCOLS, Condition, parse_numbers, revit_conditions, sweep_conditions
from .run import RobustnessRun, evaluate_conditions
from .statistics import METRICS, bootstrap_ci, summarise
from .study import RobustnessResult, measure_robustness, write_robustness
from .transforms import FILLS, scale, shift

__all__ = [
    "DIRECTIONS", "FILLS", "METRICS", "PROTOCOLS", "Condition", "RobustnessResult", "RobustnessRun",
    "bootstrap_ci", "evaluate_conditions", "measure_robustness", "parse_numbers", "revit_conditions", "scale",
    "shift", "summarise", "sweep_conditions", "write_robustness",
]
