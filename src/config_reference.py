"""Every config key, generated from the schema in src/config.py: the README's reference table cannot drift.

    python -m src.config_reference                 # print the Markdown tables
    python -m src.config_reference --check README.md README_CN.md   # exit 1 if a README's table is stale
    python -m src.config_reference --write README.md README_CN.md   # rewrite the tables in place

Types and defaults come from the dataclasses; descriptions from the comment on (or just above) each field.
A field without a comment is an error, so a new key cannot land undocumented. In a README the tables sit
between the markers `<!-- config-reference:begin -->` and `<!-- config-reference:end -->`.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
import typing
from typing import Any, Dict, List, Sequence, Tuple

from src import config as C

BEGIN, END = "<!-- config-reference:begin -->", "<!-- config-reference:end -->"


def field_comments(cls: type) -> Dict[str, str]:
    """name -> the comment on the field's line, else the comment lines right above it."""
    lines, _ = inspect.getsourcelines(cls)
    comments: Dict[str, str] = {}
    above: List[str] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("#").strip())
            continue
        match = re.match(r"\s+(\w+):\s*[^=]+=", line)
        if match and match.group(1) in {f.name for f in dataclasses.fields(cls)}:
            trailing = line.split("  # ", 1)[1].strip() if "  # " in line else ""
            comments[match.group(1)] = trailing or " ".join(above)
        if stripped:
            above = []
    return comments


def type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin is typing.Union:
        return " or ".join(type_name(a) for a in args)
    if origin in (tuple, Tuple):
        return f"list of {type_name(args[0])}" if args else "list"
    return getattr(tp, "__name__", str(tp))


def show(value: Any) -> str:
    if isinstance(value, tuple):
        return "`[" + ", ".join(show(v).strip("`") for v in value) + "]`"
    if value == "":
        return '`""`'
    return f"`{value}`"


def _rows(cls: type, prefix: str, instance: Any) -> List[Tuple[str, str, str, str]]:
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    rows = []
    for f in dataclasses.fields(cls):
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(value) and f.name != "loss_scale":
            rows += _rows(type(value), f"{prefix}{f.name}.", value)
            continue
        doc = comments.get(f.name, "")
        if not doc:
            raise ValueError(f"src/config.py: {cls.__name__}.{f.name} has no comment; document every key")
        if dataclasses.is_dataclass(value):  # loss_scale: one row per sub-key
            for sub in dataclasses.fields(value):
                sub_doc = field_comments(type(value)).get(sub.name, "")
                rows.append((f"{prefix}{f.name}.{sub.name}", type_name(typing.get_type_hints(type(value))[sub.name]),
                             show(getattr(value, sub.name)), sub_doc))
            continue
        rows.append((f"{prefix}{f.name}", type_name(hints[f.name]), show(value), doc))
    return rows


def reference() -> str:
    """The Markdown reference: sections shared by both commands, model fields, stage fields, then the rest."""
    gd, td = C.GDConfig(), C.TDConfig()
    out = ["Generated from `src/config.py` by `python -m src.config_reference` (a test keeps this table current).",
           ""]

    def table(title: str, rows: Sequence[Tuple[str, ...]], header: Sequence[str]) -> None:
        out.extend([f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)])
        out.extend("| " + " | ".join(r) + " |" for r in rows)
        out.append("")

    for section, where in (("run", "GD and TD"), ("data", "GD and TD"), ("checkpoint", "GD and TD")):
        value = getattr(td, section)
        table(f"`{section}.*` ({where})", _rows(type(value), f"{section}.", value),
              ("key", "type", "default", "meaning"))
    bert_rows = [("preset", ", ".join(f"`{n}`" for n in C.MODEL_PRESETS), "(none)",
                  "start from a named shape, then override any field below")]
    bert_rows += [(k, t, d, m) for k, t, d, m in _rows(C.BertConfig, "", C.BertConfig())]
    table("`teacher.*` and `student.*` (GD and TD; defaults: teacher `bert-base-uncased`, student "
          "`tinybert-4l-312`)", bert_rows, ("key", "type / values", "BertConfig default", "meaning"))
    table("`distill.*` (GD and TD)", _rows(C.DistillConfig, "distill.", td.distill),
          ("key", "type", "default", "meaning"))
    stages = {"gd": gd.gd, "td.finetune": td.td.finetune, "td.phase1": td.td.phase1, "td.phase2": td.td.phase2}
    per_stage = {name: {k: d for k, _, d, _ in _rows(C.StageConfig, "", s)} for name, s in stages.items()}
    stage_rows = [(k, t, *(per_stage[n][k] for n in stages), m) for k, t, _, m in _rows(C.StageConfig, "",
                                                                                        C.StageConfig())]
    table("Training stages: `gd.*` (GD), `td.finetune.*`, `td.phase1.*`, `td.phase2.*` (TD)", stage_rows,
          ("key", "type", *(f"`{n}`" for n in stages), "meaning"))
    table("`task.*` (TD)", _rows(C.TaskConfig, "task.", td.task), ("key", "type", "default", "meaning"))
    table("`eval.*` (TD)", _rows(C.EvalConfig, "eval.", td.eval), ("key", "type", "default", "meaning"))
    return "\n".join(out).rstrip() + "\n"


def replace_block(text: str, block: str, path: str, begin: str = BEGIN, end: str = END) -> str:
    if text.count(begin) != 1 or text.count(end) != 1:
        raise ValueError(f"{path}: expected exactly one {begin} ... {end} block")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{block}{end}{tail}"


def sync_readmes(paths: Sequence[str], block: str, write: bool, what: str, command: str,
                 begin: str = BEGIN, end: str = END) -> int:
    """Check (or, with `write`, rewrite) the generated `block` between `begin` and `end` in each README; 1 if one
    is stale (naming `command`, which rewrites them), else 0."""
    stale = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        updated = replace_block(text, block, path, begin, end)
        if updated != text:
            if write:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(updated)
                print(f"{path}: {what} updated")
            else:
                stale.append(path)
    if stale:
        print(f"stale {what} in {', '.join(stale)}: run {command} --write {' '.join(stale)}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", nargs="+", metavar="FILE", help="exit 1 if FILE's table differs")
    group.add_argument("--write", nargs="+", metavar="FILE", help="rewrite the table in FILE")
    args = parser.parse_args(argv)
    block = reference()
    if not (args.check or args.write):
        sys.stdout.write(block)
        return 0
    return sync_readmes(args.check or args.write, block, bool(args.write), "config reference",
                        "python -m src.config_reference")

if __name__ == "__main__":
    sys.exit(main())
