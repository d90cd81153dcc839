"""Triton model repository templates (installed as ``rfad.triton_repo``), copied by ``rfad-export triton-repo``.

One folder per python model, ``<model>/1/model.py``: ``rfad_pipeline`` (the BLS loop),
``onnx_component`` (a component run by onnxruntime), ``rfad_judge_prepare`` and
``rfad_judge_verdict`` (the judge ensemble's python steps). Their configs are written from the
component specs (:mod:`rfad.export.triton_config`). Nothing imports these files: Triton's python
backend loads them from the written repository. :data:`TEMPLATES` is this folder, wherever the
package lies (a source checkout, an editable install or a wheel).
"""

from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent
