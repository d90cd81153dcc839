"""The torch runner: the PyTorch modules, in process (``rfad generate``, the trainers' evaluation, RFFT).

Built from the specs like the other runners (:class:`rfad.pipeline.spec_runner.SpecRunner`): a
component call binds its values to the spec's tensors by role and runs that component's module
(:mod:`rfad.components.modules`, the same module ``rfad-export onnx`` traces), so the three
runners compute one thing per component and a renamed tensor is followed here too. Tensors keep
their autograd history (RFFT's differentiable step runs through this runner).
"""

from __future__ import annotations

import numpy as np
import torch

from rfad.components.modules import component_modules, model_facts
from rfad.components.registry import component_specs
from rfad.components.specs import ComponentSpec, TensorSpec
from rfad.models.diffusion import DiffusionModels
from rfad.models.judge import JudgeModels
from rfad.pipeline.runner import RunnerInfo
from rfad.pipeline.spec_runner import SpecRunner


class TorchRunner(SpecRunner):
    """Runs :class:`DiffusionModels` (and optionally :class:`JudgeModels`, with early screening's
    RFNet where they have one) in process on ``device``.

    ``renames``: component -> {tensor key -> name}, as :func:`rfad.components.registry.component_specs`
    takes them (an export's tensors named otherwise than their roles).

    ``compile_mode``: run the ControlNet and the UNet, the two modules of every denoising step,
    through ``torch.compile`` with this mode (``"default"``, ``"reduce-overhead"``: CUDA graphs,
    ``"max-autotune"``); None runs them eagerly. The modules themselves are not changed (the
    compiled callables share their weights). The first call at each batch shape compiles
    (benchmarks/gpu_check.py's ``compile`` part records how long), so it pays only for long-lived
    runners; with ``"reduce-overhead"`` each batch shape also records its own CUDA graph.
    """

    def __init__(self, models: DiffusionModels, device: str | torch.device = "cpu", judge: JudgeModels | None = None,
                 renames: dict[str, dict[str, str]] | None = None, compile_mode: str | None = None):
        self.models = models
        self.compile_mode = compile_mode
        self.judge_models = judge
        self.device = torch.device(device)
        self.dtype = models.unet.dtype
        self.modules = component_modules(models, judge)
        specs = component_specs(model_facts(models, judge), renames)
        self.specs = {name: spec for name, spec in specs.items() if name in self.modules}
        # Each module's floating inputs in its parameters' dtype (a float16 generator beside a float32 judge).
        self.input_dtypes = {name: next(module.parameters()).dtype for name, module in self.modules.items()}
        if compile_mode is not None:
            for name in ("controlnet", "unet"):
                self.modules[name] = torch.compile(self.modules[name], mode=compile_mode)
        vae_config = models.vae.config
        self.info = RunnerInfo(
            tokenizer=models.tokenizer,
            scheduler_config=dict(models.scheduler_config),
            unet_in_channels=int(models.unet.config.in_channels),
            latent_channels=int(vae_config.latent_channels),
            vae_scale_factor=2 ** (len(vae_config.block_out_channels) - 1),
            caption_tokenizer=judge.caption_tokenizer if judge is not None else None,
            judge_size=int(judge.rfnet.config.image_size) if judge is not None else None,
            screen_judge=judge is not None and judge.screen_rfnet is not None,
        )

    def _execute(self, spec: ComponentSpec, feed: list[tuple[TensorSpec, object]]) -> list[torch.Tensor]:
        dtype = self.input_dtypes[spec.name]
        outputs = self.modules[spec.name](*(self._tensor(value, dtype) for _, value in feed))
        return list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]

    def _tensor(self, value, dtype: torch.dtype) -> torch.Tensor:
        """``value`` (a tensor as the loop passes it, or a per-sample numpy array) on the runner's
        device, floating values in the module's dtype; integer values (ids, masks, timesteps) unchanged."""
        tensor = torch.from_numpy(value) if isinstance(value, np.ndarray) else value
        return tensor.to(self.device, dtype) if tensor.is_floating_point() else tensor.to(self.device)
