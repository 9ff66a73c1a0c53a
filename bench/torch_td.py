"""Task distillation the way the PyTorch TinyBERT original runs it, for bench/bench_td_e2e.py.

Runs in a separate venv that has torch (never a project dependency):
    "$VENV/bin/python" bench/torch_td.py --data D.npz --teacher T.npz --out R.json [options]

The original's task_distill.py, in plain torch: every batch padded to max_seq_length, the teacher recomputed at
every step in both phases (no_grad, eval mode), phase 1 = attention-score MSE on the mapped layers + hidden-state
MSE (embeddings included) through one fit_dense projection, phase 2 = soft cross-entropy against the teacher's
logits; AdamW with linear warm-up and decay, global-norm clipping 1.0; dev accuracy after every phase-2 epoch.
The loss reductions are the project's defaults (means over real tokens; see src/distill/losses.py), so that the accuracy
can be compared with the MindSpore pipeline; they cost the same as the original's unmasked means.

Inputs are written by bench_td_e2e.py: D.npz holds train_/dev_ input_ids, input_mask, segment_ids [N, S] and
label_ids [N] (the project's own records, so both sides see the same tokens); T.npz the fine-tuned teacher's
weights under HF BERT names (the project's checkpoint names). The student starts from the teacher's embeddings,
the teacher layers of the layer map, pooler and classifier (checkpoint.student_init: teacher_mapped_layers).
Prints one `RESULT {json}` line: wall-clock seconds per phase, steps, samples/s, dev accuracy per epoch.
"""
import argparse
import json
import math
import resource
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    def __init__(self, h, heads):
        super().__init__()
        self.heads, self.d = heads, h // heads
        self.query, self.key, self.value = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)

    def forward(self, x, mask_add, drop):
        b, s, h = x.shape
        split = lambda t: t.view(b, s, self.heads, self.d).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.d) + mask_add
        ctx = torch.matmul(drop(F.softmax(scores, -1)), v).transpose(1, 2).reshape(b, s, h)
        return ctx, scores


class DenseNorm(nn.Module):
    def __init__(self, d_in, h):
        super().__init__()
        self.dense, self.LayerNorm = nn.Linear(d_in, h), nn.LayerNorm(h, eps=1e-12)


class Attention(nn.Module):
    def __init__(self, h, heads):
        super().__init__()
        self.self, self.output = SelfAttention(h, heads), DenseNorm(h, h)


class Intermediate(nn.Module):
    def __init__(self, h, ff):
        super().__init__()
        self.dense = nn.Linear(h, ff)


class Layer(nn.Module):
    def __init__(self, h, heads, ff):
        super().__init__()
        self.attention, self.intermediate, self.output = Attention(h, heads), Intermediate(h, ff), DenseNorm(ff, h)

    def forward(self, x, mask_add, drop):
        ctx, scores = self.attention.self(x, mask_add, drop)
        a = self.attention.output.LayerNorm(drop(self.attention.output.dense(ctx)) + x)
        y = self.output.LayerNorm(drop(self.output.dense(F.gelu(self.intermediate.dense(a)))) + a)
        return y, scores


class Embeddings(nn.Module):
    def __init__(self, vocab, h, max_pos, types):
        super().__init__()
        self.word_embeddings, self.position_embeddings = nn.Embedding(vocab, h), nn.Embedding(max_pos, h)
        self.token_type_embeddings, self.LayerNorm = nn.Embedding(types, h), nn.LayerNorm(h, eps=1e-12)


class Encoder(nn.Module):
    def __init__(self, layers, h, heads, ff):
        super().__init__()
        self.layer = nn.ModuleList(Layer(h, heads, ff) for _ in range(layers))


class Pooler(nn.Module):
    def __init__(self, h):
        super().__init__()
        self.dense = nn.Linear(h, h)


class Bert(nn.Module):
    def __init__(self, h, layers, heads, ff, vocab=30522, max_pos=512, types=2):
        super().__init__()
        self.embeddings, self.encoder = Embeddings(vocab, h, max_pos, types), Encoder(layers, h, heads, ff)
        self.pooler = Pooler(h)


class Classifier(nn.Module):
    """HF BertForSequenceClassification layout; returns (logits, hidden states, attention scores)."""

    def __init__(self, h, layers, heads, ff, labels, dropout):
        super().__init__()
        self.bert, self.classifier = Bert(h, layers, heads, ff), nn.Linear(h, labels)
        self.drop = nn.Dropout(dropout)

    def forward(self, ids, types, mask):
        e = self.bert.embeddings
        mask_add = (1.0 - mask.float()[:, None, None, :]) * -10000.0
        pos = torch.arange(ids.shape[1])[None]
        x = self.drop(e.LayerNorm(e.word_embeddings(ids) + e.position_embeddings(pos) + e.token_type_embeddings(types)))
        hidden, scores = [x], []
        for layer in self.bert.encoder.layer:
            x, s = layer(x, mask_add, self.drop)
            hidden.append(x)
            scores.append(s)
        pooled = torch.tanh(self.bert.pooler.dense(x[:, 0]))
        return self.classifier(self.drop(pooled)), hidden, scores


def masked_attention_mse(s, t, mask):
    m = mask.float()
    pairs = (m[:, :, None] * m[:, None, :])[:, None].expand_as(s)
    return ((s - t) ** 2 * pairs).sum() / pairs.sum().clamp(min=1.0)


def masked_hidden_mse(s, t, mask):
    m = mask.float()[:, :, None].expand_as(s)
    return ((s - t) ** 2 * m).sum() / m.sum().clamp(min=1.0)


def soft_cross_entropy(s, t, temperature):
    return (-F.softmax(t / temperature, -1) * F.log_softmax(s / temperature, -1)).sum(-1).mean()


def optimizer(params, lr, weight_decay, total, warmup_ratio):
    named = list(params)
    decay = [p for n, p in named if "LayerNorm" not in n and "bias" not in n]
    no_decay = [p for n, p in named if "LayerNorm" in n or "bias" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, eps=1e-6)
    warm = int(warmup_ratio * total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: step / max(warm, 1) if step < warm else max(0.0, 1.0 - step / max(total, 1)))
    return opt, sched


def accuracy(net, data, batch=64):
    net.eval()
    correct = 0
    with torch.inference_mode():
        for lo in range(0, len(data["label_ids"]), batch):
            sl = slice(lo, lo + batch)
            logits = net(data["input_ids"][sl], data["segment_ids"][sl], data["input_mask"][sl])[0]
            correct += int((logits.argmax(-1) == data["label_ids"][sl]).sum())
    net.train()
    return correct / len(data["label_ids"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--ff", type=int, default=1536)
    ap.add_argument("--teacher_layers", type=int, default=6)
    ap.add_argument("--student_layers", type=int, default=3)
    ap.add_argument("--num_labels", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--phase1_epochs", type=int, default=1)
    ap.add_argument("--phase2_epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--warmup_ratio", type=float, default=0.1)
    ap.add_argument("--weight_decay", type=float, default=1e-4)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    raw = np.load(args.data)
    split = lambda name: {k: torch.from_numpy(raw[f"{name}_{k}"].astype(np.int64))  # noqa: E731
                          for k in ("input_ids", "input_mask", "segment_ids", "label_ids")}
    train, dev = split("train"), split("dev")
    shape = dict(h=args.hidden, heads=args.heads, ff=args.ff, labels=args.num_labels)
    teacher = Classifier(layers=args.teacher_layers, dropout=0.0, **shape).eval()
    state = {k: torch.from_numpy(v) for k, v in np.load(args.teacher).items()}
    teacher.load_state_dict(state, strict=True)
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = Classifier(layers=args.student_layers, dropout=0.1, **shape)
    ratio = args.teacher_layers // args.student_layers
    init = {k: v for k, v in state.items() if not k.startswith("bert.encoder.")}
    for i in range(args.student_layers):  # student layer i+1 <- teacher layer (i+1)*ratio
        src = f"bert.encoder.layer.{(i + 1) * ratio - 1}."
        init.update({f"bert.encoder.layer.{i}." + k[len(src):]: v for k, v in state.items() if k.startswith(src)})
    student.load_state_dict(init, strict=True)
    fit_dense = nn.Linear(args.hidden, args.hidden)
    nn.init.trunc_normal_(fit_dense.weight, std=0.02, a=-0.04, b=0.04)
    nn.init.zeros_(fit_dense.bias)
    n = len(train["label_ids"])
    steps_per_epoch = n // args.batch
    result = {"rows": n, "seq": int(train["input_ids"].shape[1]), "batch": args.batch, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "dev_accuracy": []}
    rng = np.random.default_rng(args.seed)
    for phase, epochs in (("phase1", args.phase1_epochs), ("phase2", args.phase2_epochs)):
        params = list(student.named_parameters()) + (list(("fit_dense." + k, v) for k, v in
                                                          fit_dense.named_parameters()) if phase == "phase1" else [])
        total = steps_per_epoch * epochs
        opt, sched = optimizer(params, args.lr, args.weight_decay, total, args.warmup_ratio)
        clip = [p for _, p in params]
        start = time.time()
        for epoch in range(epochs):
            order = torch.from_numpy(rng.permutation(n))
            for b in range(steps_per_epoch):
                idx = order[b * args.batch:(b + 1) * args.batch]
                ids, mask, types = train["input_ids"][idx], train["input_mask"][idx], train["segment_ids"][idx]
                with torch.no_grad():  # the original: the teacher at every step, padded to max_seq_length
                    t_logits, t_hidden, t_scores = teacher(ids, types, mask)
                s_logits, s_hidden, s_scores = student(ids, types, mask)
                if phase == "phase1":
                    loss = sum(masked_attention_mse(s_scores[i], t_scores[(i + 1) * ratio - 1], mask)
                               for i in range(args.student_layers))
                    loss = loss + sum(masked_hidden_mse(fit_dense(s_hidden[i]), t_hidden[i * ratio], mask)
                                      for i in range(args.student_layers + 1))
                else:
                    loss = soft_cross_entropy(s_logits, t_logits, args.temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(clip, 1.0)
                opt.step()
                sched.step()
            if phase == "phase2":
                result["dev_accuracy"].append(round(accuracy(student, dev), 4))
        seconds = time.time() - start
        result[phase] = {"seconds": round(seconds, 1), "steps": total,
                         "samples_per_s": round(total * args.batch / seconds, 2), "last_loss": round(float(loss), 5)}
    result["seconds"] = round(result["phase1"]["seconds"] + result["phase2"]["seconds"], 1)
    result["final_accuracy"] = result["dev_accuracy"][-1]
    result["best_accuracy"] = max(result["dev_accuracy"])
    result["maxrss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
