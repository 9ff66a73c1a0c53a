"""Reproduce the MindSpore 2.10 compile-cache problem that made us disable MS_COMPILER_CACHE_ENABLE.

Runs the same GRAPH_MODE gradient computation in two fresh processes sharing one compile cache and prints the
gradient norms: without the bug both lines are identical (same seed, same inputs).

  python scripts/repro_compile_cache.py
"""
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import numpy as np, mindspore as ms
from src.config import BertConfig
from src.model.heads import BertForSequenceClassification
ms.set_context(mode=ms.GRAPH_MODE)
ms.set_seed(0)
config = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=37, max_position_embeddings=64, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0)
net = BertForSequenceClassification(config, 2)
ids = ms.Tensor(np.arange(16).reshape(2, 8) % 99 + 1, ms.int32)
types, mask = ms.ops.zeros_like(ids), ms.ops.ones_like(ids)
def loss_fn(*args):
    return net(*args)[0].sum()
grads = ms.value_and_grad(loss_fn, None, net.trainable_params())(ids, types, mask)[1]
norms = [float(np.linalg.norm(g.asnumpy())) for g in grads[:3]]
print("gradient norms of the first 3 parameters:", " ".join(f"{n:.6f}" for n in norms))
"""


def main() -> int:
    cache = tempfile.mkdtemp(prefix="ms_cache_")
    child = os.path.join(cache, "child.py")  # graph mode parses function source, so it must be a file
    with open(child, "w", encoding="utf-8") as f:
        f.write(CHILD)
    env = dict(os.environ, MS_COMPILER_CACHE_ENABLE="1", MS_COMPILER_CACHE_PATH=cache, GLOG_v="3",
               PYTHONPATH=ROOT)
    lines = []
    for run in (1, 2):
        out = subprocess.run([sys.executable, child], env=env, capture_output=True, text=True, check=True)
        lines.append(out.stdout.strip().splitlines()[-1])
        print(f"process {run} (cache {'empty' if run == 1 else 'reused'}): {lines[-1]}")
    print("same results" if lines[0] == lines[1] else "DIFFERENT results: the compile cache changed the gradients")
    return 0 if lines[0] == lines[1] else 1


if __name__ == "__main__":
    sys.exit(main())
