"""The training step shared by GD, TD phase 1, TD phase 2 and fine-tuning.

`ms.value_and_grad` + `ms.amp.DynamicLossScaler` + `ms.amp.all_finite` (the stock
TrainOneStepWithLossScaleCell selects an Ascend-only overflow kernel and fails on CPU):

1. loss and gradients of `loss_scale * loss` w.r.t. the optimizer's parameters;
2. data parallel: gradients all-reduced and averaged once (nn.DistributedGradReducer, mean=True);
3. unscaled; overflow = any non-finite gradient (identical on every rank after the all-reduce); with global-norm
   clipping both come from one pass (the global norm of the scaled gradients is non-finite exactly when a
   gradient is), and unscaling and clipping are one multiply per tensor;
4. clipped by global norm (default, like Google BERT) or per tensor (the reference's choice);
5. AdamWeightDecay step only when finite (skipped steps are counted; the schedule's global step does not move,
   as in the reference), then the loss scale is adjusted: halved on overflow, doubled after `window` clean steps.

Graph mode compiles step 1 per input shape and steps 2-5 once (two jit functions). On CPU with one device steps
3-5 run on the host instead (HostUpdate, run.cpu_host_update): the same formulas in numpy, in place.

The learning rate is linear warm-up then polynomial decay measured from step 0 (Google BERT, the reference).
"""
from __future__ import annotations

import logging
from typing import Dict, Sequence

import numpy as np
import mindspore as ms
from mindspore import nn, ops

from src.config import StageConfig
from src.training.host_update import HostUpdate
from src.training.optim import build_optimizer

logger = logging.getLogger(__name__)


def _global_norm(grads):
    return ops.sqrt(sum(ops.square(g).sum() for g in grads))


class TrainStep:
    """One optimizer step over `loss_net`, whose construct returns (total, *terms).

    Call `step(*batch)` -> (outputs of the loss net, finite bool Tensor, grad_norm Tensor, loss_scale Tensor);
    `gradients(*batch)` and `update(*grads)` are its two halves. `graph=True` compiles them with ms.jit: the
    gradients once per input shape, the update once. `host_update` (CPU, one device): the update in numpy.
    """

    def __init__(self, loss_net: nn.Cell, params: Sequence[ms.Parameter], stage: StageConfig, total_steps: int,
                 graph: bool = True, distributed: bool = False, host_update: bool = False):
        if host_update and distributed:
            raise ValueError("host_update: the host update serves one device; data-parallel runs update in the graph")
        self.loss_net = loss_net
        self.stage = stage
        self.total_steps = total_steps
        self.optimizer = build_optimizer(params, stage, total_steps)
        self.scaler = ms.amp.DynamicLossScaler(scale_value=float(stage.loss_scale.init),
                                               scale_factor=int(stage.loss_scale.factor),
                                               scale_window=int(stage.loss_scale.window))
        self.max_scale = ms.Tensor(float(stage.loss_scale.max), ms.float32)  # loss_scale.max caps the growth
        self.reducer = None
        if distributed:
            from mindspore.communication import GlobalComm, get_group_size  # pylint: disable=import-outside-toplevel

            self.reducer = nn.DistributedGradReducer(self.optimizer.parameters, mean=True, degree=get_group_size(),
                                                     group=GlobalComm.WORLD_COMM_GROUP)
        self.max_norm = float(stage.max_grad_norm)
        self.per_tensor = stage.clip_mode == "per_tensor"
        gradients, update = self._gradients_function(), self._update_function()
        # Two graphs, not one: graph mode compiles once per input shape, and with length buckets a step sees a few
        # sequence lengths. Only the gradients depend on the length; the all-reduce, clipping, AdamWeightDecay and
        # the loss-scale update (~3.4 s of a ~5 s step compile for a 17 M-parameter student, bench/bench_compile.py)
        # are compiled once. The gradients go to `update` as separate arguments: a tuple argument of a jit function
        # is a constant to MindSpore 2.10 and would recompile `update` at every call.
        self.gradients_fn, self.update_fn = gradients, update  # uncompiled, for callers that build their own graph
        self.gradients = ms.jit(gradients) if graph else gradients
        self.graph_update = ms.jit(update) if graph else update
        # CPU, one device (Backend.host_update): the update in numpy on the parameters' memory.
        self.host_update = HostUpdate(self.optimizer, self.scaler, stage, total_steps) if host_update else None

    def _gradients_function(self):
        """Step 1: (outputs of the loss net, gradients of loss_scale * total w.r.t. the optimizer's parameters)."""
        loss_net, scaler = self.loss_net, self.scaler

        def forward(*batch):
            outputs = loss_net(*batch)
            return scaler.scale(outputs[0]), outputs

        grad_fn = ms.value_and_grad(forward, None, self.optimizer.parameters, has_aux=True)

        def gradients(*batch):
            (_, outputs), grads = grad_fn(*batch)
            return outputs, grads

        return gradients

    def _update_function(self):
        """Steps 2-5 in the graph: all-reduce, unscale and clip, AdamWeightDecay when finite, loss-scale update."""

        def update(*grads):
            if self.reducer is not None:
                grads = self.reducer(grads)
            scale = self.scaler.scale_value.value()
            if self.per_tensor:
                grads = self.scaler.unscale(grads)
                finite = ms.amp.all_finite(grads)
                norm = _global_norm(grads)
                grads = tuple(g * ops.minimum(1.0, self.max_norm / ops.maximum(ops.sqrt(ops.square(g).sum()), 1e-12))
                              for g in grads)
            else:
                # One pass over the scaled gradients: their global norm / scale is the unscaled norm, and it is
                # finite exactly when every gradient is (a NaN or inf anywhere makes the sum of squares NaN or inf;
                # a finite gradient above ~1e19 would too, and counts as an overflow). Unscaling and clipping are one
                # multiply per tensor. Saves ~3 kernels per parameter tensor against unscale + all_finite + clip.
                norm = _global_norm(grads) / scale
                finite = ops.isfinite(norm)
                factor = ops.minimum(1.0, self.max_norm / ops.maximum(norm, 1e-12)) / scale
                grads = tuple(g * factor for g in grads)
            if finite:
                self.optimizer(grads)
            self.scaler.adjust(finite)
            ops.assign(self.scaler.scale_value, ops.minimum(self.scaler.scale_value.value(), self.max_scale))
            return finite, norm, self.scaler.scale_value.value()

        return update

    def update(self, *grads):
        """Steps 2-5 of the module docstring for these gradients: (finite, grad_norm, loss_scale)."""
        return (self.host_update or self.graph_update)(*grads)

    def step(self, *batch):
        """One optimizer step: (outputs of the loss net, finite bool, grad_norm, loss_scale)."""
        outputs, grads = self.gradients(*batch)
        finite, norm, scale = self.update(*grads)
        return outputs, finite, norm, scale

    @property
    def global_step(self) -> int:
        """Optimizer updates applied so far (overflow-skipped steps excluded)."""
        return int(self.optimizer.global_step.asnumpy().reshape(-1)[0])

    @property
    def loss_scale(self) -> float:
        return float(self.scaler.scale_value.asnumpy())

    # ---------------------------------------------------------------------------------------- state
    def state_dict(self) -> Dict[str, np.ndarray]:
        """Optimizer moments, its step and the loss-scale state, for exact resumption."""
        state = {p.name: p.asnumpy() for p in self.optimizer.moments1}
        state.update({p.name: p.asnumpy() for p in self.optimizer.moments2})
        state["optimizer.global_step"] = self.optimizer.global_step.asnumpy()
        state["loss_scale.value"] = self.scaler.scale_value.asnumpy()
        state["loss_scale.counter"] = self.scaler.counter.asnumpy()
        return state

    def load_state_dict(self, state: Dict[str, np.ndarray], source: str) -> None:
        targets = {p.name: p for p in list(self.optimizer.moments1) + list(self.optimizer.moments2)}
        targets["optimizer.global_step"] = self.optimizer.global_step
        targets["loss_scale.value"] = self.scaler.scale_value
        targets["loss_scale.counter"] = self.scaler.counter
        missing = sorted(set(targets) - set(state))
        if missing:
            raise ValueError(f"{source}: training state lacks {len(missing)} entries, e.g. {missing[:5]}")
        for name, param in targets.items():
            value = np.asarray(state[name])
            if tuple(value.shape) != tuple(param.shape):
                raise ValueError(f"{source}: {name} has shape {value.shape}, expected {tuple(param.shape)}")
            param.set_data(ms.Tensor(value, param.dtype))
