"""Simulated crash for the resumption tests: with CRASH_AT_STEP=N in the environment (and this folder first on
PYTHONPATH), the process dies like `kill -9` when the training loop asks for its N-th optimizer step (os._exit,
nothing saved, no clean-up), after the steps before it have run normally. It wraps the public TrainStep.step, so the
code under test carries no hook for it."""
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
