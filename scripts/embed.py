"""Embed sentences with a converted BERT checkpoint (mean pooling) and print their cosine similarities.

  python scripts/embed.py --checkpoint runs/quickstart/minilm.ckpt --vocab VOCAB.txt --sentences "a" "b" ...
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="our .ckpt (with its .json beside it)")
    parser.add_argument("--vocab", required=True, help="vocab.txt of the model")
    parser.add_argument("--sentences", nargs="+", required=True)
    parser.add_argument("--max_seq_length", type=int, default=64)
    parser.add_argument("--cased", action="store_true", help="do not lower-case (cased vocabularies)")
    args = parser.parse_args(argv)

    import numpy as np  # pylint: disable=import-outside-toplevel
    import mindspore as ms  # pylint: disable=import-outside-toplevel
    from src.model.checkpoint import load_model  # pylint: disable=import-outside-toplevel
    from src.data.tokenization import BertTokenizer  # pylint: disable=import-outside-toplevel

    tokenizer = BertTokenizer(args.vocab, do_lower_case=not args.cased)
    rows = [tokenizer.encode(s, max_seq_length=args.max_seq_length) for s in args.sentences]
    ids, types, mask = (ms.Tensor(np.array([getattr(r, f) for r in rows]), ms.int32)
                        for f in ("input_ids", "token_type_ids", "attention_mask"))
    net = load_model(args.checkpoint, head="backbone")
    net.set_train(False)
    hidden = net(ids, types, mask)[0].asnumpy()
    weights = mask.asnumpy()[..., None].astype(np.float32)
    emb = (hidden * weights).sum(1) / weights.sum(1)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    print(f"{len(rows)} sentences -> embeddings {emb.shape}; cosine similarity:")
    for i, sentence in enumerate(args.sentences):
        print("  " + " ".join(f"{emb[i] @ emb[j]:6.3f}" for j in range(len(rows))) + f"   {sentence}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
