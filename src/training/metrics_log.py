"""What a stage reports while it trains: the log line, the progress bar's figures and metrics.jsonl.

Every `log_steps` steps one row goes to OUT/<stage>/metrics.jsonl ("type": "train": the mean of each loss term
over the window, lr, loss scale, overflow count, gradient norm, samples/s, ETA) and the same figures to the log;
each evaluation adds a "type": "eval" row. scripts/plot_metrics.py draws them.
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Dict

import numpy as np

from src.distill.loss import LOSS_TERMS
from src.training.manifest import METRICS

logger = logging.getLogger(__name__)


def duration(seconds: float) -> str:
    """H:MM:SS."""
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class MetricsLog:
    """metrics.jsonl of a run directory (written only when `enabled`, i.e. by rank 0)."""

    def __init__(self, run_dir: str, enabled: bool = True):
        self.path = os.path.join(run_dir, METRICS)
        self.enabled = enabled

    def append(self, row: Dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")


class TrainWindow:
    """Loss terms summed over the steps since the last log line (overflow-skipped steps do not count)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.sums = np.zeros(len(LOSS_TERMS) + 1)
        self.count = 0
        self.started = time.time()
        self.grad_norm = 0.0

    def add(self, total: float, terms: Any, grad_norm: float, steps: int = 1) -> None:
        """One step's losses; `steps` > 1: a sunk chunk of that many steps, represented by its last step's."""
        self.sums += steps * np.array([float(total)] + [float(t) for t in terms])
        self.count += steps
        self.grad_norm = float(grad_norm)

    def mean_loss(self) -> float:
        return float(self.sums[0] / self.count) if self.count else float("nan")

    def row(self, name: str, step: int, epoch: int, total_steps: int, lr: float, loss_scale: float,
            overflow_steps: int, samples_per_step: int, eta_s: float) -> Dict[str, Any]:
        """The metrics.jsonl row of this window (also logged); then the window starts again."""
        count = self.count
        row: Dict[str, Any] = {"type": "train", "step": step, "epoch": epoch, "loss": float(self.sums[0] / count)}
        row.update({term: float(self.sums[i + 1] / count) for i, term in enumerate(LOSS_TERMS)})
        row.update(lr=lr, loss_scale=loss_scale, overflow_steps=overflow_steps, grad_norm=self.grad_norm,
                   samples_per_s=count * samples_per_step / max(time.time() - self.started, 1e-9), eta_s=eta_s,
                   time=time.time())
        terms = " ".join(f"{k} {row[k]:.4f}" for k in ("loss",) + LOSS_TERMS if row[k] or k == "loss")
        logger.info("%s step %d/%d epoch %d: %s | lr %.3g scale %g overflow %d | %.1f samples/s | ETA %s", name, step,
                    total_steps, epoch, terms, lr, loss_scale, overflow_steps, row["samples_per_s"], duration(eta_s))
        self.reset()
        return row
