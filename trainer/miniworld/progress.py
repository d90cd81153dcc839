"""A phase of ``rfad-train miniworld`` in progress, checkpointed every ``--checkpoint-every`` steps.

Finished phases are kept as stages (:mod:`rfad.trainer.miniworld.stages`); this keeps the phase
that is still training, so that a run stopped an hour into its UNet loses at most
``--checkpoint-every`` steps. A checkpoint holds everything the rest of the phase reads: the
models' weights, AdamW's moments, the learning-rate schedule's position, every random stream
(the phase's numpy and torch generators and torch's global one) and the loss curve so far. A
phase resumed from it takes the same steps with the same draws, so it ends in the same weights
as one that never stopped (tests/test_miniworld_training.py).

Layout: ``OUT.stages/<phase>.step<N>/`` with ``weights.safetensors`` (weights and torch generator
states), ``optimiser.pt`` (AdamW and scheduler state dicts, read with ``weights_only=True``) and
``progress.json`` (the step, the numpy generator states, the loss curve, the settings compared),
written last. A new checkpoint is complete before the previous one is deleted, so a stop at any
moment leaves at least one whole checkpoint. A checkpoint made under other settings is refused,
as a stage is.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

PROGRESS_FILE = "progress.json"


@dataclass
class LoopState:
    """What a training loop carries from one step to the next."""

    modules: dict[str, torch.nn.Module]
    optimiser: torch.optim.Optimizer
    scheduler: object
    numpy_rngs: dict[str, np.random.Generator] = field(default_factory=dict)
    torch_rngs: dict[str, torch.Generator] = field(default_factory=dict)


class PhaseCheckpoints:
    """The checkpoints of one phase in progress, in ``folder`` (``OUT.stages``); ``every`` 0: none."""

    def __init__(self, folder: Path, phase: str, every: int, settings: dict, echo=print):
        self.folder, self.phase, self.every, self.settings, self.echo = Path(folder), phase, every, settings, echo

    def _kept(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.folder.glob(f"{self.phase}.step*"):
            if (path / PROGRESS_FILE).is_file() and path.name.removeprefix(f"{self.phase}.step").isdigit():
                found.append((int(path.name.removeprefix(f"{self.phase}.step")), path))
        return sorted(found)

    def resume(self, state: LoopState) -> tuple[int, dict]:
        """Load the latest checkpoint into ``state``: (the number of steps it had taken, its extra record);
        (0, {}) when there is none. Raises ValueError naming the settings when it was made under others."""
        kept = self._kept()
        if not kept:
            return 0, {}
        from safetensors.torch import load_file

        step, path = kept[-1]
        progress = json.loads((path / PROGRESS_FILE).read_text(encoding="utf-8"))
        made_under = progress["settings"]
        differ = sorted(key for key in self.settings if made_under.get(key) != self.settings[key])
        if differ:
            changes = ", ".join(f"{key} {made_under.get(key)!r} -> {self.settings[key]!r}" for key in differ)
            raise ValueError(f"{path}: this {self.phase} phase in progress was trained under other settings "
                             f"({changes}); rerun with its settings to resume, or delete it to start the phase over")
        tensors = load_file(path / "weights.safetensors")
        for name, module in state.modules.items():
            prefix = f"module.{name}."
            module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        for name, generator in state.torch_rngs.items():
            generator.set_state(tensors[f"rng.{name}"])
        torch.set_rng_state(tensors["rng.global"])
        optimiser = torch.load(path / "optimiser.pt", weights_only=True)
        state.optimiser.load_state_dict(optimiser["optimiser"])
        state.scheduler.load_state_dict(optimiser["scheduler"])
        for name, generator in state.numpy_rngs.items():
            generator.bit_generator.state = progress["numpy_rngs"][name]
        self.echo(f"  {self.phase}: resumed at step {step} from {path}")
        return step, progress["extra"]

    def after_step(self, steps_taken: int, total: int, state: LoopState, extra: dict) -> None:
        """Checkpoint when ``steps_taken`` is a multiple of ``every`` (not at the end: the phase's
        result is kept by its caller)."""
        if not self.every or steps_taken % self.every or steps_taken >= total:
            return
        from safetensors.torch import save_file

        target = self.folder / f"{self.phase}.step{steps_taken}"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        tensors = {f"module.{name}.{k}": v.detach().clone().contiguous()
                   for name, module in state.modules.items() for k, v in module.state_dict().items()}
        tensors.update({f"rng.{name}": generator.get_state() for name, generator in state.torch_rngs.items()})
        tensors["rng.global"] = torch.get_rng_state()
        save_file(tensors, target / "weights.safetensors")
        torch.save({"optimiser": state.optimiser.state_dict(), "scheduler": state.scheduler.state_dict()},
                   target / "optimiser.pt")
        progress = {"phase": self.phase, "step": steps_taken, "settings": self.settings, "extra": extra,
                    "numpy_rngs": {name: g.bit_generator.state for name, g in state.numpy_rngs.items()}}
        (target / PROGRESS_FILE).write_text(json.dumps(progress) + "\n", encoding="utf-8")  # last: marks it whole
        for step, path in self._kept():
            if step != steps_taken:
                shutil.rmtree(path, ignore_errors=True)

    def clear(self) -> None:
        """Drop the phase's checkpoints (it has finished and its result is kept)."""
        for _, path in self._kept():
            shutil.rmtree(path, ignore_errors=True)
        for path in self.folder.glob(f"{self.phase}.step*"):
            shutil.rmtree(path, ignore_errors=True)  # a checkpoint stopped while being written


class PhaseRun:
    """One phase's loop bookkeeping: each step's losses to its log, a checkpoint every so many steps.

    ``log(step, losses)``: the loss log; ``snapshot()``: the log's state to keep in a checkpoint;
    ``restore(snapshot)``: put it back on resume; ``checkpoints``: None to keep none."""

    def __init__(self, log: Callable[[int, dict], None], checkpoints: PhaseCheckpoints | None = None,
                 snapshot: Callable[[], dict] = dict, restore: Callable[[dict], None] = lambda _: None):
        self.log, self.checkpoints, self.snapshot, self.restore = log, checkpoints, snapshot, restore

    def start(self, state: LoopState) -> int:
        """The first step to take: 0, or where the last checkpoint left off (``state`` loaded from it)."""
        if self.checkpoints is None:
            return 0
        step, extra = self.checkpoints.resume(state)
        if step:
            self.restore(extra)
        return step

    def step_done(self, step: int, losses: dict, state: LoopState, total: int) -> None:
        """After step ``step`` (0-based) of ``total``: log it and checkpoint when due."""
        self.log(step, losses)
        if self.checkpoints is not None:
            self.checkpoints.after_step(step + 1, total, state, self.snapshot())
