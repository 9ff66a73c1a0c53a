"""The optimizer update of CPU training on one device, in numpy, in place on the parameters' memory."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict

import numpy as np

from src.config import StageConfig
from src.training.optim import lr_at, parameter_groups


class HostUpdate:
    """Steps 3-5 of src/training/step.py (unscale, clip, AdamWeightDecay, loss scale) on the host, for CPU training
    on one device.

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

    def __init__(self, optimizer: Any, scaler: Any, stage: StageConfig, total_steps: int):
        """optimizer: the step's nn.AdamWeightDecay; scaler: its ms.amp.DynamicLossScaler."""
        opt = self.optimizer = optimizer
        self.scaler, self.stage, self.total_steps = scaler, stage, total_steps
        self.per_tensor, self.max_norm = stage.clip_mode == "per_tensor", float(stage.max_grad_norm)
        self.params = list(opt.parameters)
        self.moments1, self.moments2 = list(opt.moments1), list(opt.moments2)
        decay = {id(p) for g in parameter_groups(self.params, stage)[:-1] if g["weight_decay"] > 0
                 for p in g["params"]}
        self.decay = [float(stage.weight_decay) if id(p) in decay else 0.0 for p in self.params]
        self.beta1, self.beta2, self.eps = (float(t.asnumpy().reshape(-1)[0]) for t in (opt.beta1, opt.beta2, opt.eps))
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="host-update")
        self._scratch: Dict[int, np.ndarray] = {}

    def _buffers(self, worker: int) -> np.ndarray:
        buf = self._scratch.get(worker)
        if buf is None:
            buf = self._scratch[worker] = np.empty((2, self.CHUNK), np.float32)
        return buf

    def _chunk(self, p, m, v, g, lo, hi, factor, lr, wd):

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
        g = [t.asnumpy().reshape(-1) for t in grads]
        scale_view = self.scaler.scale_value.asnumpy()
        scale = float(scale_view)
        if self.per_tensor:
            norms = [float(np.sqrt(np.dot(x, x, out=None))) / scale for x in g]
            norm = float(np.sqrt(sum(n * n for n in norms)))
            finite = bool(np.isfinite(norms).all() and all(np.isfinite(x).all() for x in g))
            factors = [min(1.0, self.max_norm / max(n, 1e-12)) / scale for n in norms]
        else:
            squares = np.float32(0.0)
            for x in g:
                squares = squares + np.dot(x, x)
            norm = float(np.sqrt(squares)) / scale
            finite = bool(np.isfinite(norm))
            factors = [min(1.0, self.max_norm / max(norm, 1e-12)) / scale] * len(g)
        if finite:
            counter = self.optimizer.global_step.asnumpy()
            lr = lr_at(self.stage, int(counter.reshape(-1)[0]), self.total_steps)
            jobs = []
            for p, m, v, x, factor, wd in zip(self.params, self.moments1, self.moments2, g, factors, self.decay):
                pv, mv, vv = p.asnumpy().reshape(-1), m.asnumpy().reshape(-1), v.asnumpy().reshape(-1)
                for lo in range(0, x.size, self.CHUNK):
                    jobs.append(self.pool.submit(self._chunk, pv, mv, vv, x, lo, min(lo + self.CHUNK, x.size),
                                                 factor, lr, wd))
            for job in jobs:
                job.result()
            counter += 1
        # the dynamic loss scale, as ms.amp.DynamicLossScaler.adjust, capped at loss_scale.max as the graph update
        count_view = self.scaler.counter.asnumpy()
        factor_s, window = float(self.scaler.scale_factor), int(self.scaler.scale_window)
        if finite:
            if int(count_view) == window - 1 and np.isfinite(np.float32(scale * factor_s)):
                scale_view[...] = np.float32(min(scale * factor_s, self.stage.loss_scale.max))
            count_view[...] = (int(count_view) + 1) % window
        else:
            scale_view[...] = np.float32(max(1.0, scale / factor_s))
            count_view[...] = 0
        return np.bool_(finite), np.float32(norm), np.float32(scale_view)
