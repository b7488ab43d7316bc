"""RL estimators for the GRPO trainer, by the name ``grpo.estimator`` takes.

Adding one: a new module with a class that follows :class:`~.base.Estimator` (``advantages``,
``prepare`` and ``calls``), and a line in :data:`ESTIMATORS`. The trainer's invariant tests (on-policy ratio,
micro-batch invariance, skipping zero-advantage rows) run over this dict.
"""

from __future__ import annotations

from dllm_rl.trainers.estimators.base import (
    Buffer,
    Call,
    Estimator,
    LossStats,
    LossTotals,
    StepContext,
)
from dllm_rl.trainers.estimators.coupled import CoupledEstimator, CoupledTables
from dllm_rl.trainers.estimators.one_step import OneStepEstimator, OneStepTables
from dllm_rl.trainers.estimators.spg import SPGEstimator, SPGTables
from dllm_rl.trainers.estimators.trajectory import TrajectoryEstimator, TrajectoryTables
from dllm_rl.trainers.estimators.wd1 import Wd1Estimator, Wd1Tables

ESTIMATORS: dict[str, type] = {
    "trajectory": TrajectoryEstimator,
    "one_step": OneStepEstimator,
    "spg": SPGEstimator,
    "wd1": Wd1Estimator,
    "coupled": CoupledEstimator,
}


def get_estimator(name: str) -> Estimator:
    """A fresh estimator object for ``name`` (a key of :data:`ESTIMATORS`)."""
    try:
        return ESTIMATORS[name]()
    except KeyError:
        raise ValueError(f"unknown estimator {name!r}; choose from {sorted(ESTIMATORS)}") from None


__all__ = [
    "ESTIMATORS",
    "Buffer",
    "Call",
    "CoupledEstimator",
    "CoupledTables",
    "Estimator",
    "LossStats",
    "LossTotals",
    "OneStepEstimator",
    "OneStepTables",
    "SPGEstimator",
    "SPGTables",
    "StepContext",
    "TrajectoryEstimator",
    "TrajectoryTables",
    "Wd1Estimator",
    "Wd1Tables",
    "get_estimator",
]
