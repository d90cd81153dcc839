"""What the export's step processes import before they start: imported once by their forkserver.

:func:`rfad.isolated.step_processes` forks every step from a server that has imported its
``preload`` modules. diffusers and transformers resolve their model classes on first use, and the
TorchScript exporter, graph surgery and onnxruntime are imported inside the steps, so a step whose
server had imported only :mod:`rfad.export.onnx_steps` spent ~4.6 s importing them again (2 CPU
cores; 21 steps per export of the whole set: most of the tiny zoo's export). Importing this
module resolves them once; a step then starts in milliseconds.
"""

from __future__ import annotations

import diffusers
import onnx_graphsurgeon  # noqa: F401  (graph_files folds constants with it)
import onnxruntime  # noqa: F401  (the parity check)
import polygraphy.logger  # noqa: F401  (quiet_export_logs)
import torch.onnx._internal.torchscript_exporter.utils  # noqa: F401  (torch.onnx.export(dynamo=False))
import transformers

import rfad.export.onnx_steps  # noqa: F401
import rfad.models.diffusion  # noqa: F401
import rfad.models.judge  # noqa: F401
import rfad.models.rfnet  # noqa: F401
import rfad.models.u2net  # noqa: F401

# Reading a lazy attribute imports the class's module (what `from diffusers import X` in a step does).
MODEL_CLASSES = (diffusers.AutoencoderKL, diffusers.UNet2DConditionModel, diffusers.ControlNetModel,
                 diffusers.DDIMScheduler, transformers.CLIPTextModel, transformers.CLIPTokenizer,
                 transformers.AutoTokenizer, transformers.DPTForDepthEstimation)
