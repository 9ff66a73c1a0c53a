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
import math
from typing import Dict, List, Optional, Sequence

import numpy as np
import mindspore as ms
from mindspore import nn, ops
from mindspore.nn.learning_rate_schedule import LearningRateSchedule

from src.config import StageConfig

logger = logging.getLogger(__name__)


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


def _global_norm(grads):
    return ops.sqrt(sum(ops.square(g).sum() for g in grads))


class HostUpdate:
    """Steps 3-5 of the module docstring on the host, for CPU training on one device.

    On CPU a Parameter's memory is host memory and `Tensor.asnumpy()` is a writable view of it, as are the gradient
    tensors a graph returns, so the update can run in numpy, in place: the same float32 formulas as the graph
    (global norm of the scaled gradients, unscale and clip folded into one factor, AdamWeightDecay without bias
    correction: m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2, p -= lr (m / (sqrt(v) + eps) + wd p), the learning
    rate of the schedule at the optimizer's step, then the step counter and the dynamic loss scale), but in chunks
    that stay in cache, on two threads. MindSpore 2.10's CPU AdamWeightDecay kernel runs one element at a time on
    one thread (~135 ms for 17 M parameters on the development machine), and clipping in the graph writes fresh
    tensors (~55 ms); this takes ~30 ms (bench/bench_update.py).
    """

    CHUNK = 1 << 18  # elements per task: 1 MB of float32, so a chunk's temporaries stay in cache

    def __init__(self, step: "TrainStep"):
        from concurrent.futures import ThreadPoolExecutor  # pylint: disable=import-outside-toplevel

        opt = step.optimizer
        self.step_owner = step
        self.params = list(opt.parameters)
        self.moments1, self.moments2 = list(opt.moments1), list(opt.moments2)
        decay = {id(p) for g in parameter_groups(self.params, step.stage)[:-1] if g["weight_decay"] > 0
                 for p in g["params"]}
        self.decay = [float(step.stage.weight_decay) if id(p) in decay else 0.0 for p in self.params]
        self.beta1, self.beta2, self.eps = (float(t.asnumpy().reshape(-1)[0]) for t in (opt.beta1, opt.beta2, opt.eps))
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="host-update")
        self._scratch: Dict[int, np.ndarray] = {}

    def _buffers(self, worker: int) -> np.ndarray:
        buf = self._scratch.get(worker)
        if buf is None:
            buf = self._scratch[worker] = np.empty((2, self.CHUNK), np.float32)
        return buf

    def _chunk(self, p, m, v, g, lo, hi, factor, lr, wd):
        import threading  # pylint: disable=import-outside-toplevel

        buf = self._buffers(threading.get_ident())
        n = hi - lo
        gs, tmp = buf[0, :n], buf[1, :n]
        p, m, v, g = p[lo:hi], m[lo:hi], v[lo:hi], g[lo:hi]
        np.multiply(g, np.float32(factor), out=gs)  # unscaled and clipped gradient
        m *= np.float32(self.beta1)
        np.multiply(gs, np.float32(1.0 - self.beta1), out=tmp)
        m += tmp
        np.multiply(gs, gs, out=tmp)
        tmp *= np.float32(1.0 - self.beta2)
        v *= np.float32(self.beta2)
        v += tmp
        np.sqrt(v, out=tmp)
        tmp += np.float32(self.eps)
        np.divide(m, tmp, out=tmp)
        if wd:
            np.multiply(p, np.float32(wd), out=gs)
            tmp += gs
        tmp *= np.float32(lr)
        p -= tmp

    def __call__(self, *grads):
        owner = self.step_owner
        g = [t.asnumpy().reshape(-1) for t in grads]
        scale_view = owner.scaler.scale_value.asnumpy()
        scale = float(scale_view)
        if owner.per_tensor:
            norms = [float(np.sqrt(np.dot(x, x, out=None))) / scale for x in g]
            norm = float(np.sqrt(sum(n * n for n in norms)))
            finite = bool(np.isfinite(norms).all() and all(np.isfinite(x).all() for x in g))
            factors = [min(1.0, owner.max_norm / max(n, 1e-12)) / scale for n in norms]
        else:
            squares = np.float32(0.0)
            for x in g:
                squares = squares + np.dot(x, x)
            norm = float(np.sqrt(squares)) / scale
            finite = bool(np.isfinite(norm))
            factors = [min(1.0, owner.max_norm / max(norm, 1e-12)) / scale] * len(g)
        if finite:
            counter = owner.optimizer.global_step.asnumpy()
            lr = lr_at(owner.stage, int(counter.reshape(-1)[0]), owner.total_steps)
            jobs = []
            for p, m, v, x, factor, wd in zip(self.params, self.moments1, self.moments2, g, factors, self.decay):
                pv, mv, vv = p.asnumpy().reshape(-1), m.asnumpy().reshape(-1), v.asnumpy().reshape(-1)
                for lo in range(0, x.size, self.CHUNK):
                    jobs.append(self.pool.submit(self._chunk, pv, mv, vv, x, lo, min(lo + self.CHUNK, x.size),
                                                 factor, lr, wd))
            for job in jobs:
                job.result()
            counter += 1
        # the dynamic loss scale, as ms.amp.DynamicLossScaler.adjust
        count_view = owner.scaler.counter.asnumpy()
        factor_s, window = float(owner.scaler.scale_factor), int(owner.scaler.scale_window)
        if finite:
            if int(count_view) == window - 1 and np.isfinite(np.float32(scale * factor_s)):
                scale_view[...] = np.float32(scale * factor_s)
            count_view[...] = (int(count_view) + 1) % window
        else:
            scale_view[...] = np.float32(max(1.0, scale / factor_s))
            count_view[...] = 0
        return np.bool_(finite), np.float32(norm), np.float32(scale_view)


class TrainStep:
    """One optimizer step over `loss_net`, whose construct returns (total, *terms).

    Call `step(*batch)` -> (terms tuple of Tensors, finite bool Tensor, grad_norm Tensor, loss_scale Tensor).
    `graph=True` compiles the step with ms.jit: the gradients once per input shape, the update once.
    """

    def __init__(self, loss_net: nn.Cell, params: Sequence[ms.Parameter], stage: StageConfig, total_steps: int,
                 graph: bool = True, distributed: bool = False, host_update: Optional[bool] = None):
        self.loss_net = loss_net
        self.stage = stage
        self.total_steps = total_steps
        self.optimizer = build_optimizer(params, stage, total_steps)
        self.scaler = ms.amp.DynamicLossScaler(scale_value=float(stage.loss_scale.init),
                                               scale_factor=int(stage.loss_scale.factor),
                                               scale_window=int(stage.loss_scale.window))
        self.reducer = None
        if distributed:
            from mindspore.communication import GlobalComm, get_group_size  # pylint: disable=import-outside-toplevel

            self.reducer = nn.DistributedGradReducer(self.optimizer.parameters, mean=True, degree=get_group_size(),
                                                     group=GlobalComm.WORLD_COMM_GROUP)
        self.max_norm = float(stage.max_grad_norm)
        self.per_tensor = stage.clip_mode == "per_tensor"
        weights = self.optimizer.parameters

        def forward(*batch):
            outputs = loss_net(*batch)
            return self.scaler.scale(outputs[0]), outputs

        grad_fn = ms.value_and_grad(forward, None, weights, has_aux=True)

        def gradients(*batch):
            (_, outputs), grads = grad_fn(*batch)
            return outputs, grads

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
            return finite, norm, self.scaler.scale_value.value()

        # Two graphs, not one: graph mode compiles once per input shape, and with length buckets a step sees a few
        # sequence lengths. Only the gradients depend on the length; the all-reduce, clipping, AdamWeightDecay and
        # the loss-scale update (~3.4 s of a ~5 s step compile for a 17 M-parameter student, bench/bench_compile.py)
        # are compiled once. The gradients go to `update` as separate arguments: a tuple argument of a jit function
        # is a constant to MindSpore 2.10 and would recompile `update` at every call.
        self.gradients_fn, self.update_fn = gradients, update  # uncompiled, for callers that build their own graph
        self._gradients = ms.jit(gradients) if graph else gradients
        self._update = ms.jit(update) if graph else update
        # CPU, one device: the update in numpy on the parameters' memory (HostUpdate); None: when on CPU.
        if host_update is None:
            host_update = ms.get_context("device_target") == "CPU"
        self.host_update = HostUpdate(self) if host_update and not distributed else None

    def gradients_only(self, *batch):
        """(outputs, gradients) of a batch without any update (the compiled graph of that shape)."""
        return self._gradients(*batch)

    def step(self, *batch):
        outputs, grads = self._gradients(*batch)
        finite, norm, scale = (self.host_update or self._update)(*grads)
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
