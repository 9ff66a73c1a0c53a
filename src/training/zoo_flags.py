"""The MindSpore model zoo's flat command-line flags, as aliases of this project's YAML keys.

The zoo's run_general_distill.py and run_task_distill.py take every top-level scalar of their YAML as a flag
(`--epoch_size=3 --do_shuffle="true" --load_teacher_ckpt_path=...`). Users copy those command lines from the
zoo README and from ModelArts job definitions; here each such flag is translated into the equivalent
`--section.key=value` override (or into the command's own choice, e.g. which phase to run), with the zoo's value
syntax ("true"/"false" strings, True/False literals). A zoo flag that has no meaning in this project is refused
with the reason, never ignored. ZOO_FLAGS is also the source of the README's table.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from src.config import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ZOO_CONFIG_DIR = os.path.join(ROOT, "src", "model_utils")  # where the zoo resolved a relative --config_path
# The zoo's task-distillation YAML names -> ours.
ZOO_TD_CONFIGS = {"td_config_sst2.yaml": "sst2.yaml", "td_config_mnli.yaml": "mnli.yaml",
                  "td_config_qnli.yaml": "qnli.yaml", "td_config_15cls.yaml": "tnews.yaml",
                  "td_config_ner.yaml": "cluener.yaml"}
ZOO_TASKS = {"SST-2": "classification", "QNLI": "classification", "MNLI": "classification",
             "TNEWS": "classification", "CLUENER": "ner"}


@dataclass
class ZooTranslation:
    """What a command line of zoo flags asks for, in this project's terms."""

    kind: str = "gd"  # "gd" (run_general_distill.py) or "td" (run_task_distill.py)
    config: Optional[str] = None  # --config_path
    overrides: List[str] = field(default_factory=list)  # --section.key=value
    do_train: Optional[bool] = None  # TD: run phase 1 + 2 (True) or only evaluate (False)
    do_eval: Optional[bool] = None
    eval_checkpoint: str = ""  # TD --load_td1_ckpt_path: the checkpoint evaluated when do_train is false
    device_num: Optional[int] = None  # checked against the launcher's world size
    distribute: Optional[bool] = None
    task_name: str = ""
    notes: List[str] = field(default_factory=list)  # what was translated how (logged)
    modelarts: Any = None  # the ModelArtsSync that copied the inputs in (set by training.cli.load_for_run)


def parse_bool(flag: str, value: str) -> bool:
    """The zoo's two boolean syntaxes: the strings "true"/"false" and the literals True/False."""
    text = str(value).strip().strip("'\"")
    if text in ("true", "True", "1"):
        return True
    if text in ("false", "False", "0"):
        return False
    raise ConfigError(f"command line: --{flag}={value!r}; expected true or false (the model zoo's \"true\"/\"false\" "
                      f"or True/False)")


def parse_int(flag: str, value: str) -> int:
    try:
        return int(str(value).strip().strip("'\""))
    except ValueError:
        raise ConfigError(f"command line: --{flag}={value!r}; expected an integer") from None


def zoo_data_files(flag: str, value: str) -> List[str]:
    """A zoo data flag: a file, or a folder whose record files are taken (the zoo took every name containing
    "record" and not "db"; side files such as .db indexes and schema JSON are left out here)."""
    path = os.path.abspath(os.path.expanduser(value))
    if os.path.isfile(path):
        return [path]
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if "record" in n and not n.endswith((".db", ".json"))
                       and os.path.isfile(os.path.join(path, n)))
        if not names:
            raise ConfigError(f"command line: --{flag}={value}: the folder holds no record file (names containing "
                              f"'record', as in the model zoo)")
        return [os.path.join(path, n) for n in names]
    raise ConfigError(f"command line: --{flag}={value}: no such file or folder")


def resolve_config_path(value: str) -> str:
    """--config_path as the zoo meant it: absolute, else relative to the working directory, else relative to the
    zoo's src/model_utils/ (its default ../../gd_config.yaml is this repository's gd_config.yaml); the zoo's TD
    YAML names map to ours (td_config_sst2.yaml -> td_config/sst2.yaml, td_config_15cls.yaml -> tnews.yaml ...)."""
    candidates = [value] if os.path.isabs(value) else [os.path.abspath(value), os.path.normpath(
        os.path.join(ZOO_CONFIG_DIR, value))]
    base = os.path.basename(value)
    if base in ZOO_TD_CONFIGS:
        candidates.append(os.path.join(ROOT, "td_config", ZOO_TD_CONFIGS[base]))
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise ConfigError(f"command line: --config_path={value}: not found (looked at {', '.join(candidates)})")


Converter = Callable[[str, str, ZooTranslation], None]


@dataclass(frozen=True)
class ZooFlag:
    """One zoo flag: which commands have it, what it becomes here (for the README table), and how."""

    name: str
    commands: Tuple[str, ...]  # "gd", "td"
    ours: str  # what it maps to, as the README shows it
    apply: Optional[Converter] = None  # None: refused with `refused`
    refused: str = ""


def _key(key: str, kind: str = "str") -> Converter:
    def apply(flag: str, value: str, out: ZooTranslation) -> None:
        if kind == "bool":
            parsed = "true" if parse_bool(flag, value) else "false"
        elif kind == "int":
            parsed = str(parse_int(flag, value))
        else:
            parsed = value
        for one in key.split(","):
            out.overrides.append(f"--{one}={parsed}")
    return apply


def _files(key: str) -> Converter:
    def apply(flag: str, value: str, out: ZooTranslation) -> None:
        files = zoo_data_files(flag, value)
        out.overrides.append(f"--{key}=[{', '.join(repr(f) for f in files)}]")
    return apply


def _config_path(flag: str, value: str, out: ZooTranslation) -> None:
    out.config = resolve_config_path(value)


def _set(attr: str, kind: str = "str") -> Converter:
    def apply(flag: str, value: str, out: ZooTranslation) -> None:
        parsed = parse_bool(flag, value) if kind == "bool" else parse_int(flag, value) if kind == "int" else value
        setattr(out, attr, parsed)
    return apply


def _task_name(flag: str, value: str, out: ZooTranslation) -> None:
    if value not in ZOO_TASKS:
        raise ConfigError(f"command line: --task_name={value!r}; the model zoo's task names are "
                          f"{', '.join(ZOO_TASKS)}")
    out.task_name = value
    out.overrides.append(f"--task.name={value}")


_METRICS = {"accuracy": "accuracy", "bf1": "f1", "mf1": "accuracy"}


def _assessment(flag: str, value: str, out: ZooTranslation) -> None:
    if value not in _METRICS:
        raise ConfigError(f"command line: --assessment_method={value!r}; expected accuracy, bf1 or mf1")
    if value == "mf1":
        out.notes.append("--assessment_method=mf1: the zoo's micro-F1 over all classes equals accuracy for "
                         "single-label classification; scored as accuracy (entity F1 for NER)")
    out.overrides.append(f"--task.metric={_METRICS[value]}")


def _epochs(key: str) -> Converter:
    def apply(flag: str, value: str, out: ZooTranslation) -> None:
        out.overrides.append(f"--{key}={float(parse_int(flag, value))}")
    return apply


def _stage_key(name: str) -> Converter:
    """A key of the stage config: gd.<name> for GD, td.phase1.<name> and td.phase2.<name> for TD."""
    def apply(flag: str, value: str, out: ZooTranslation) -> None:
        stages = ("gd",) if out.kind == "gd" else ("td.phase1", "td.phase2")
        out.overrides += [f"--{stage}.{name}={parse_int(flag, value)}" for stage in stages]
    return apply


ZOO_FLAGS: Tuple[ZooFlag, ...] = (
    ZooFlag("config_path", ("gd", "td"), "--config", _config_path),
    ZooFlag("device_target", ("gd", "td"), "run.device_target", _key("run.device_target")),
    ZooFlag("device_id", ("gd", "td"), "run.device_id", _key("run.device_id", "int")),
    ZooFlag("enable_modelarts", ("gd", "td"), "run.enable_modelarts", _key("run.enable_modelarts", "bool")),
    ZooFlag("data_url", ("gd", "td"), "run.data_url", _key("run.data_url")),
    ZooFlag("train_url", ("gd", "td"), "run.train_url", _key("run.train_url")),
    ZooFlag("checkpoint_url", ("gd", "td"), "run.checkpoint_url", _key("run.checkpoint_url")),
    ZooFlag("enable_profiling", ("gd", "td"), "run.enable_profiling", _key("run.enable_profiling", "bool")),
    ZooFlag("distribute", ("gd",), "checked against the launcher", _set("distribute", "bool")),
    ZooFlag("device_num", ("gd",), "checked against the launcher's world size", _set("device_num", "int")),
    ZooFlag("epoch_size", ("gd",), "gd.epochs", _epochs("gd.epochs")),
    ZooFlag("save_ckpt_step", ("gd", "td"), "gd.save_steps / td.phase1,2.save_steps", _stage_key("save_steps")),
    ZooFlag("max_ckpt_num", ("gd", "td"), "gd.keep_checkpoints / td.phase1,2.keep_checkpoints",
            _stage_key("keep_checkpoints")),
    ZooFlag("do_shuffle", ("gd", "td"), "data.shuffle", _key("data.shuffle", "bool")),
    ZooFlag("enable_data_sink", ("gd", "td"), "run.data_sink", _key("run.data_sink", "bool")),
    ZooFlag("data_sink_steps", ("gd", "td"), "run.data_sink_steps", _key("run.data_sink_steps", "int")),
    ZooFlag("save_ckpt_path", ("gd",), "run.output_dir", _key("run.output_dir")),
    ZooFlag("load_teacher_ckpt_path", ("gd", "td"), "checkpoint.teacher", _key("checkpoint.teacher")),
    ZooFlag("data_dir", ("gd",), "data.train_files", _files("data.train_files")),
    ZooFlag("schema_dir", ("gd", "td"), "data.schema_file", _key("data.schema_file")),
    ZooFlag("dataset_type", ("gd", "td"), "data.dataset_type", _key("data.dataset_type")),
    ZooFlag("do_train", ("td",), "--phase both (true) / --phase eval (false)", _set("do_train", "bool")),
    ZooFlag("do_eval", ("td",), "data.eval_files kept (true) / emptied (false)", _set("do_eval", "bool")),
    ZooFlag("td_phase1_epoch_size", ("td",), "td.phase1.epochs", _epochs("td.phase1.epochs")),
    ZooFlag("td_phase2_epoch_size", ("td",), "td.phase2.epochs", _epochs("td.phase2.epochs")),
    ZooFlag("load_gd_ckpt_path", ("td",), "checkpoint.student", _key("checkpoint.student")),
    ZooFlag("load_td1_ckpt_path", ("td",), "--phase eval --checkpoint", _set("eval_checkpoint")),
    ZooFlag("train_data_dir", ("td",), "data.train_files", _files("data.train_files")),
    ZooFlag("eval_data_dir", ("td",), "data.eval_files", _files("data.eval_files")),
    ZooFlag("task_type", ("td",), "task.type", _key("task.type")),
    ZooFlag("task_name", ("td",), "task.name (and checked against task.type)", _task_name),
    ZooFlag("assessment_method", ("td",), "task.metric (accuracy, bf1 -> f1, mf1 -> accuracy)", _assessment),
    ZooFlag("num_labels", ("td",), "task.num_labels", _key("task.num_labels", "int")),
    ZooFlag("seed1", ("td",), "run.seed", _key("run.seed", "int")),
    ZooFlag("seed2", ("td",), "run.data_seed", _key("run.data_seed", "int")),
)

_BY_NAME: Dict[str, ZooFlag] = {flag.name: flag for flag in ZOO_FLAGS}
# Zoo flags that have no meaning here, and why (each is refused with its reason).
REFUSED = {
    "data_path": "the local copy of data_url is fixed at /cache/data here (ModelArts)",
    "output_path": "outputs go to run.output_dir (--save_ckpt_path), which ModelArts copies to train_url",
    "load_path": "the local copy of checkpoint_url is fixed at /cache/checkpoint here (ModelArts)",
    "modelarts_dataset_unzip_name": "upload the data unzipped: no zip is extracted here",
    "folder_name_under_zip_file": "upload the data unzipped: no zip is extracted here",
    "description": "the command itself says which it is (run_general_distill.py or run_task_distill.py)",
    "onnx_path": "ONNX evaluation is done with predict.py / scripts/run_infer_cpu.py on an export.py file",
    "ckpt_file": "a flag of export.py",
    "file_name": "a flag of export.py",
    "file_format": "a flag of export.py",
}


def is_zoo_flag(name: str) -> bool:
    return name in _BY_NAME or name in REFUSED


# ModelArts: the zoo rebased these flags' relative paths on its local copies of data_url / checkpoint_url.
LOCAL_COPY = {"data_dir": "data", "schema_dir": "data", "train_data_dir": "data", "eval_data_dir": "data",
              "load_teacher_ckpt_path": "checkpoint", "load_gd_ckpt_path": "checkpoint",
              "load_td1_ckpt_path": "checkpoint"}


def run_flags(items: Sequence[Tuple[str, str]]) -> List[Tuple[str, str]]:
    """The items that set run.* keys or the config file: what is needed before ModelArts copies the data in."""
    return [(n, v) for n, v in items if n in _BY_NAME and (_BY_NAME[n].ours.startswith("run.")
                                                           or n == "config_path")]


def translate(items: Sequence[Tuple[str, str]], kind: str,
              local_roots: Optional[Dict[str, str]] = None) -> ZooTranslation:
    """(flag, value) pairs of zoo flags given to the `kind` command -> a ZooTranslation. local_roots (ModelArts:
    {"data": "/cache/data", "checkpoint": "/cache/checkpoint"}): relative paths of the LOCAL_COPY flags are taken
    from there, as the zoo did.

    Raises:
        ConfigError: a flag of the other command, a refused flag (with the reason) or a bad value (naming it).
    """
    out = ZooTranslation(kind=kind)
    other = "run_task_distill.py" if kind == "gd" else "run_general_distill.py"
    for name, value in items:
        if name in REFUSED:
            raise ConfigError(f"command line: --{name}: the model zoo's flag has no meaning here: {REFUSED[name]}")
        flag = _BY_NAME[name]
        if kind not in flag.commands:
            raise ConfigError(f"command line: --{name} is a flag of the model zoo's {other}, not of this command")
        if local_roots and name in LOCAL_COPY and value and not os.path.isabs(value):
            rebased = os.path.join(local_roots[LOCAL_COPY[name]], value)
            out.notes.append(f"--{name}={value}: ModelArts, read from {rebased}")
            value = rebased
        flag.apply(name, value, out)
    if kind == "td":
        _check_task(out)
    return out


def _check_task(out: ZooTranslation) -> None:
    types = [o.split("=", 1)[1] for o in out.overrides if o.startswith("--task.type=")]
    if out.task_name and types and ZOO_TASKS[out.task_name] != types[-1]:
        raise ConfigError(f"command line: --task_name={out.task_name} is a {ZOO_TASKS[out.task_name]} task, but "
                          f"--task_type={types[-1]} (the model zoo refuses this too)")
    if out.do_train is False and out.do_eval is False:
        raise ConfigError("command line: --do_train=false --do_eval=false: do train or do eval must have one be true "
                          "(the model zoo's rule)")
    if out.do_train is False and not out.eval_checkpoint:
        raise ConfigError("command line: --do_train=false evaluates --load_td1_ckpt_path, which is empty")
    if out.do_eval is False and out.do_train is not False:
        out.overrides.append("--data.eval_files=[]")


BEGIN, END = "<!-- zoo-flags:begin -->", "<!-- zoo-flags:end -->"


def flag_table() -> str:
    """The README's table of every zoo flag: commands, what it becomes here; then the refused ones and why."""
    names = {"gd": "GD", "td": "TD"}
    lines = ["| zoo flag | command | here |", "|---|---|---|"]
    for flag in ZOO_FLAGS:
        ours = flag.ours if flag.ours.startswith("--") or " " in flag.ours else f"`{flag.ours}`"
        lines.append(f"| `--{flag.name}` | {', '.join(names[c] for c in flag.commands)} | {ours} |")
    for name, reason in REFUSED.items():
        lines.append(f"| `--{name}` | refused | {reason} |")
    return BEGIN + "\n" + "\n".join(lines) + "\n" + END


def main(argv: Optional[Sequence[str]] = None) -> int:
    """python -m src.training.zoo_flags [--check|--write] README.md README_CN.md: print, check or rewrite the table."""
    import argparse  # pylint: disable=import-outside-toplevel

    from src.config_reference import sync_readmes  # pylint: disable=import-outside-toplevel

    parser = argparse.ArgumentParser(description=main.__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", nargs="+", metavar="FILE")
    group.add_argument("--write", nargs="+", metavar="FILE")
    args = parser.parse_args(argv)
    if not (args.check or args.write):
        print(flag_table())
        return 0
    body = flag_table()[len(BEGIN) + 1:-len(END)]  # the table between the markers
    return sync_readmes(args.check or args.write, body, bool(args.write), "zoo flag table",
                        "python -m src.training.zoo_flags", BEGIN, END)

if __name__ == "__main__":
    raise SystemExit(main())
