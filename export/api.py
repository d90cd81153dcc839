"""The export stage's public API: what the app layer (``rfad demo``) and the benchmarks use.

Everything else in :mod:`rfad.export` is internal to the stage: the import contracts in
pyproject.toml (checked by tests/test_layers.py) refuse an import of it from outside. A name
goes here when a caller outside the export needs it, and nowhere else.
"""

from __future__ import annotations

from rfad.export.graph_files import convert_to_fp16, open_graph, write_graph
from rfad.export.onnx_export import export_component, export_onnx
from rfad.export.onnx_steps import component_graphs, load_models, quiet_export_logs, vocab_size_of
from rfad.export.tolerances import PARITY_TOLERANCE
from rfad.export.triton_repo import write_triton_repo

__all__ = [
    # ONNX: the whole export, one component, and the traced PyTorch modules beside their graphs
    "export_onnx", "export_component", "load_models", "component_graphs", "vocab_size_of", "quiet_export_logs",
    # graph files and their fp16 conversion, and the parity tolerance it is held to
    "open_graph", "write_graph", "convert_to_fp16", "PARITY_TOLERANCE",
    # the Triton model repository
    "write_triton_repo",
]
