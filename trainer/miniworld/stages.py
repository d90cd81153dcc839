"""``rfad-train miniworld`` in parts: each finished phase is kept, so a stopped run resumes where it stopped.

The generator trains in phases (VAE, UNet with the text encoder, ControlNet) that take minutes to
hours each on a CPU; the phase in progress is checkpointed too (:mod:`rfad.trainer.miniworld.progress`). After the VAE and after the UNet the trained models are written to
``OUT.stages/<phase>/`` (safetensors, diffusers / transformers folders) with ``stage.json``: the
phase's loss curve, timings, its check, and the settings that made it. The same command run
again loads every finished phase instead of training it; the models are the same as an
uninterrupted run's (every phase seeds its own draws from the config's seed, and safetensors
round-trips float32 exactly). A stage made under other settings is refused, naming the
settings that differ, so a resumed run is never a mix of two configurations. The stages folder
is removed once the model set is written.

A phase is compared on the settings it and the phases before it read (:data:`PHASE_SETTINGS`):
a run with more UNet steps reuses a kept VAE, and one with another VAE learning rate refuses it.
Settings that cannot change the weights (``--threads``, ``--log-every``, ``--check-per-class``,
``--out``, ``--stop-after``) are never compared. ``--threads`` does change float summation order
on CPU, so a run resumed at another thread count is as close to the uninterrupted one as two
thread counts are.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

from rfad.trainer.checkpoints import write_folder_atomically
from rfad.trainer.miniworld.config import MiniworldTrainConfig
from rfad.trainer.miniworld.progress import PhaseCheckpoints

STAGE_FILE = "stage.json"
PHASES = ("vae", "unet")  # the ControlNet is the last phase: its output is the model set itself
# The settings each kept phase depends on: its own and those of the phases before it.
_SCENES = ("seed", "scenes", "available_share", "norm_groups")
_VAE = ("vae_steps", "vae_batch", "vae_crop", "vae_lr", "vae_channels")
_UNET = ("unet_steps", "unet_batch", "unet_lr", "unet_channels", "text_encoder", "uncond_prob", "snr_gamma")
_CONTROLNET = ("controlnet_steps", "controlnet_batch", "controlnet_lr")
# (The ControlNet is never kept as a stage, but its phase in progress is checkpointed: progress.py.)
PHASE_SETTINGS = {"vae": _SCENES + _VAE, "unet": _SCENES + _VAE + _UNET, "controlnet": _SCENES + _VAE + _UNET + _CONTROLNET}
# What no phase depends on: how the run is executed, logged and checkpointed.
NOT_COMPARED = ("command", "out", "threads", "log_every", "checkpoint_every", "check_per_class", "stop_after")


def stages_folder(out: str | Path) -> Path:
    """Where ``rfad-train miniworld --out OUT`` keeps its finished phases: ``OUT.stages`` beside ``OUT``."""
    out = Path(out)
    return out.with_name(out.name + ".stages")


def compared_settings(config: MiniworldTrainConfig, phase: str) -> dict:
    """The settings ``phase``'s stage must have been made under to be resumed from (JSON types)."""
    values = asdict(config)
    return {key: (list(values[key]) if isinstance(values[key], tuple) else values[key]) for key in PHASE_SETTINGS[phase]}


class StageStore:
    """The finished phases of one ``rfad-train miniworld --out OUT`` run."""

    def __init__(self, config: MiniworldTrainConfig):
        self.folder = stages_folder(config.out)
        self.settings = {phase: compared_settings(config, phase) for phase in PHASE_SETTINGS}

    def load(self, phase: str) -> tuple[Path, dict] | None:
        """(the phase's folder, its stage record) if it has finished under these settings; None if it has not run.

        Raises ValueError if it finished under other settings (the message names them and the folder to delete).
        """
        folder = self.folder / phase
        if not (folder / STAGE_FILE).is_file():
            return None
        record = json.loads((folder / STAGE_FILE).read_text(encoding="utf-8"))
        made_under, settings = record.get("settings", {}), self.settings[phase]
        differ = sorted(key for key in settings if made_under.get(key) != settings[key])
        if differ:
            changes = ", ".join(f"{key} {made_under.get(key)!r} -> {settings[key]!r}" for key in differ)
            raise ValueError(f"{folder}: this finished {phase} phase was trained under other settings ({changes}); "
                             f"rerun with its settings to resume, or delete {self.folder} to start over")
        return folder, record

    def save(self, phase: str, modules: dict, record: dict) -> None:
        """Write ``modules`` ({subfolder: a diffusers or transformers model}) and ``record`` as the finished ``phase``.

        The folder appears complete or not at all (``stage.json`` is written last, inside the staging folder).
        """
        def write(staging: Path) -> None:
            target = staging / phase
            for name, module in modules.items():
                module.save_pretrained(target / name, safe_serialization=True)
            stage = {"phase": phase, "settings": self.settings[phase], **record}
            (target / STAGE_FILE).write_text(json.dumps(stage, indent=2) + "\n", encoding="utf-8")

        self.folder.mkdir(parents=True, exist_ok=True)
        write_folder_atomically(self.folder, write)

    @staticmethod
    def load_model(cls, folder: Path):
        """A diffusers model kept by :meth:`save`, built from its config and weights: unlike ``from_pretrained``,
        this does not record the stage's path (``_name_or_path``) in a config the final model set would ship."""
        from safetensors.torch import load_file

        model = cls.from_config(cls.load_config(folder))
        [weights] = Path(folder).glob("*.safetensors")
        model.load_state_dict(load_file(weights))
        return model

    def in_progress(self, phase: str, every: int, echo) -> PhaseCheckpoints:
        """The checkpoints of ``phase`` while it trains, every ``every`` steps (0: none), in this folder."""
        return PhaseCheckpoints(self.folder, phase, every, self.settings[phase], echo)

    def remove(self) -> None:
        """Drop every kept phase (the model set has been written)."""
        shutil.rmtree(self.folder, ignore_errors=True)
