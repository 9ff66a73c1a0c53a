"""Simulated crashes for the resumption tests (this folder first on PYTHONPATH). The process dies like `kill -9`
(os._exit: nothing saved, no clean-up):

- CRASH_AT_STEP=N: when the training loop asks for its N-th optimizer step, after the steps before it ran normally
  (wraps the public TrainStep.step);
- CRASH_IN_SAVE=N: during the N-th save of a state.ckpt, when its temporary file is written and not yet renamed
  (wraps src.model.checkpoint.write_ckpt_file).

The code under test carries no hook for either."""
import os

if os.environ.get("CRASH_AT_STEP"):
    from src.training import step as _step_module

    _limit = int(os.environ["CRASH_AT_STEP"])
    _calls = [0]
    _original = _step_module.TrainStep.step

    def _step(self, *batch):
        _calls[0] += 1
        if _calls[0] == _limit:
            os._exit(int(os.environ.get("CRASH_EXIT_CODE", "75")))  # pylint: disable=protected-access
        return _original(self, *batch)

    _step_module.TrainStep.step = _step

if os.environ.get("CRASH_IN_SAVE"):
    from src.model import checkpoint as _checkpoint_module

    _save_limit = int(os.environ["CRASH_IN_SAVE"])
    _saves = [0]
    _write = _checkpoint_module.write_ckpt_file

    def _write_then_die(items, path, *args, **kwargs):
        result = _write(items, path, *args, **kwargs)
        if ".tmp-" in path and os.path.basename(path).startswith("state.ckpt"):
            _saves[0] += 1
            if _saves[0] == _save_limit:
                os._exit(int(os.environ.get("CRASH_EXIT_CODE", "75")))  # pylint: disable=protected-access
        return result

    _checkpoint_module.write_ckpt_file = _write_then_die
