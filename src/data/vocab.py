"""Which vocabulary a model or a set of records belongs to, and the checks that pair them.

A vocabulary is identified by its fingerprint: the number of tokens and the SHA-256 of the tokens in id order
(one per line, LF-joined), so the same vocab.txt with CRLF line ends or another path has the same fingerprint,
and a reordered or edited one does not. Converters record it beside the records (`<file>.vocab.json`), a converted
or trained checkpoint in its sidecar JSON, an export in its description; every command that pairs a vocabulary
with a model or with records compares them:

- the size must equal the model's `vocab_size` (a larger vocabulary makes ids the embedding does not have, a
  smaller one leaves the model's last rows unused: both mean another vocabulary);
- where both sides recorded a fingerprint, the hashes must be equal.

Files written before fingerprints existed (or by other tools) carry none: only the size is checked then.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

KEY = "vocab"  # the key in records' .vocab.json, checkpoint sidecars and export descriptions


class VocabMismatch(ValueError):
    """A vocabulary that is not the one a model or a set of records was made with."""


def fingerprint_of(vocab: Mapping[str, int], path: Optional[str] = None) -> Dict[str, Any]:
    """{"size", "sha256", "file"} of a token -> id mapping (as load_vocab returns)."""
    tokens = sorted(vocab, key=vocab.__getitem__)
    digest = hashlib.sha256("\n".join(tokens).encode("utf-8")).hexdigest()
    out: Dict[str, Any] = {"size": len(tokens), "sha256": digest}
    if path:
        out["file"] = os.path.abspath(path)
    return out


def fingerprint(path: str) -> Dict[str, Any]:
    """The fingerprint of a vocab.txt."""
    from src.data.tokenization import load_vocab  # pylint: disable=import-outside-toplevel

    return fingerprint_of(load_vocab(path), path)


def _named(fp: Mapping[str, Any], where: str) -> str:
    return f"{where} ({fp['size']} tokens, sha256 {str(fp['sha256'])[:12]})"


def check_pair(found: Optional[Mapping[str, Any]], found_where: str, expected: Optional[Mapping[str, Any]],
               expected_where: str, hint: str = "use the vocab.txt the model was trained with") -> None:
    """Two recorded fingerprints must be the same vocabulary (nothing is checked when either is absent)."""
    if not found or not expected:
        return
    if found.get("size") != expected.get("size") or found.get("sha256") != expected.get("sha256"):
        made = f" (made from {expected['file']})" if expected.get("file") else ""
        raise VocabMismatch(f"{_named(found, found_where)} is not the vocabulary of {_named(expected, expected_where)}"
                            f"{made}; {hint}")


def check_size(fp: Optional[Mapping[str, Any]], where: str, vocab_size: int, model_where: str) -> None:
    """A vocabulary's size must be the model's vocab_size (`model_where`: e.g. "the vocab_size of X")."""
    if fp and int(fp["size"]) != int(vocab_size):
        raise VocabMismatch(f"{where} has {fp['size']} tokens but {model_where} is {vocab_size}: "
                            f"they belong to different vocabularies")


def agree_where(recorded: Iterable[Tuple[str, Optional[Mapping[str, Any]]]]
                ) -> Optional[Tuple[str, Dict[str, Any]]]:
    """(where, fingerprint) of the first of several that recorded one, or None; raises VocabMismatch naming the
    first two that differ."""
    first: Optional[Tuple[str, Mapping[str, Any]]] = None
    for where, fp in recorded:
        if not fp:
            continue
        if first is None:
            first = (where, fp)
        else:
            check_pair(fp, where, first[1], first[0], "records and checkpoints that train together must come "
                       "from one vocab.txt")
    return (first[0], dict(first[1])) if first else None


def agree(recorded: Iterable[Tuple[str, Optional[Mapping[str, Any]]]]) -> Optional[Dict[str, Any]]:
    """The one vocabulary of several (where, fingerprint) pairs, or None if none recorded one."""
    found = agree_where(recorded)
    return found[1] if found else None
