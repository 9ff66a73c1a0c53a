"""AdamWeightDecay with BERT's parameter groups and learning-rate schedule: linear warm-up, then polynomial decay
measured from step 0 (Google BERT and the model zoo do the same)."""
from __future__ import annotations

import math
from typing import Dict, List, Sequence

import mindspore as ms
from mindspore import nn, ops
from mindspore.nn.learning_rate_schedule import LearningRateSchedule

from src.config import StageConfig


def warmup_steps(stage: StageConfig, total_steps: int) -> int:
    return int(math.floor(stage.warmup_ratio * total_steps))


def lr_at(stage: StageConfig, step: int, total_steps: int) -> float:
    """The learning rate at optimizer step `step` (Python mirror of LearningRate, for logs and tests)."""
    warm = warmup_steps(stage, total_steps)
    if step < warm:
        return stage.lr * step / warm
    progress = min(step, total_steps) / max(total_steps, 1)
    return (stage.lr - stage.end_lr) * (1.0 - progress) ** stage.power + stage.end_lr


class LearningRate(LearningRateSchedule):
    """Linear warm-up to `lr` over `warmup` steps, polynomial decay to `end_lr` at `total` steps (from step 0)."""

    def __init__(self, lr: float, end_lr: float, warmup: int, total: int, power: float):
        super().__init__()
        self.lr = float(lr)
        self.end_lr = float(end_lr)
        self.warmup = float(max(warmup, 1))
        self.use_warmup = warmup > 0
        self.total = float(max(total, 1))
        self.power = float(power)

    def construct(self, global_step):
        step = global_step.astype(ms.float32)
        progress = ops.minimum(step, self.total) / self.total
        decayed = (self.lr - self.end_lr) * ops.pow(1.0 - progress, self.power) + self.end_lr
        if self.use_warmup:
            warm = self.lr * step / self.warmup
            return ops.where(step < self.warmup, warm, decayed)
        return decayed


def parameter_groups(params: Sequence[ms.Parameter], stage: StageConfig) -> List[Dict]:
    """AdamWeightDecay groups split by name: no decay for names containing a `decay_filter` entry."""
    no_decay_keys = tuple(k.lower() for k in stage.decay_filter)
    decay = [p for p in params if not any(k in p.name.lower() for k in no_decay_keys)]
    decay_ids = {id(p) for p in decay}  # Parameter == is element-wise: compare identities, never `in`
    no_decay = [p for p in params if id(p) not in decay_ids]
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": stage.weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    groups.append({"order_params": list(params)})
    return groups


def build_optimizer(params: Sequence[ms.Parameter], stage: StageConfig, total_steps: int) -> nn.AdamWeightDecay:
    if not params:
        raise ValueError("no trainable parameters for the optimizer")
    schedule = LearningRate(stage.lr, stage.end_lr, warmup_steps(stage, total_steps), total_steps, stage.power)
    return nn.AdamWeightDecay(parameter_groups(params, stage), learning_rate=schedule, eps=stage.adam_eps)
