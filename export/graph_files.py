"""ONNX graphs edited without their weights in memory, and written with their weights streamed.

A graph's structure (nodes, names, shapes) is a few MB even when its weights are GB: the SD-1.5
UNet is 1 MB of nodes and 3.4 GB of initializers. Every step after ``torch.onnx.export`` that
does not compute with the weights (folding shape arithmetic, re-typing to float16, packing the
weights into one external-data file) therefore works on the structure alone:

- :func:`open_graph` loads the graph without its large initializers. Each keeps an external-data
  reference to where its bytes are (the exporter's per-tensor files, or a staging file for the
  weights of a graph the exporter wrote inline), recorded as a :class:`WeightSource`; tensors up to
  ``inline_limit`` bytes (scalars, shape constants, biases) are loaded, so folding can use them.
- :func:`write_graph` writes ``model.onnx`` and streams every large initializer from its source
  into ``model.onnx.data`` (or inline, for graphs under the external-data threshold), converting
  float32 bytes to float16 on the way where the graph now declares float16.

Peak memory is then the structure plus one tensor, whatever the graph's size (measured on the
SD-1.5 twin: docs/export.md, "Memory at SD-1.5 sizes"). polygraphy's ``fold_constants`` on the loaded UNet, for
comparison, peaks at 4.4x its weights (16.6 GiB): it serialises the model for ONNX Runtime and
for shape inference, and copies it between onnx-graphsurgeon and protobuf at every pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_SUFFIX = ".data"  # model.onnx -> model.onnx.data
INLINE_LIMIT = 1 << 20  # tensors up to 1 MiB stay in memory while the graph is edited
EXTERNAL_MIN = 1024  # tensors written to the data file when external (onnx's own default threshold)
ALIGNMENT = 4096  # large tensors start on a page boundary, so runtimes can map them
STAGING = "inline-weights.staging"
# onnxconverter-common's float16 clamping (convert_float_to_float16's defaults): the weights
# streamed here are converted exactly as the converter converts the tensors it holds.
FP16_MIN_POSITIVE, FP16_MAX_FINITE = 1e-7, 1e4


@dataclass(frozen=True)
class WeightSource:
    """Where an initializer's bytes are while its graph is edited: ``length`` bytes at ``offset``
    of ``path``, of ONNX data type ``data_type`` (the type they were written in)."""

    path: Path
    offset: int
    length: int
    data_type: int

    def read(self) -> bytes:
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read(self.length)
        if len(data) != self.length:
            raise OSError(f"{self.path}: expected {self.length} bytes at offset {self.offset}, read {len(data)}")
        return data


def _external_info(tensor, base: Path) -> WeightSource:
    from onnx.external_data_helper import ExternalDataInfo

    info = ExternalDataInfo(tensor)
    path = (base / info.location).resolve()
    if base.resolve() not in path.parents:
        raise ValueError(f"{tensor.name}: external data {info.location!r} lies outside {base}")
    offset = int(info.offset or 0)
    length = int(info.length) if info.length else path.stat().st_size - offset
    return WeightSource(path, offset, length, tensor.data_type)


def _refer(tensor, location: str, offset: int, length: int) -> None:
    from onnx import TensorProto

    tensor.ClearField("raw_data")
    del tensor.external_data[:]
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def open_graph(path: str | os.PathLike, inline_limit: int = INLINE_LIMIT):
    """``(model, sources)``: the graph at ``path`` with only its initializers of up to ``inline_limit``
    bytes in memory, and a :class:`WeightSource` per larger initializer (by name).

    Inline initializers above the limit (graphs the exporter wrote in one file) are moved to a
    staging file beside ``path`` first, so the structure in memory stays small.
    """
    import onnx
    from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

    path = Path(path)
    base = path.parent
    model = onnx.load(str(path), load_external_data=False)
    sources: dict[str, WeightSource] = {}
    staging = None
    try:
        for tensor in model.graph.initializer:
            if uses_external_data(tensor):
                source = _external_info(tensor, base)
                if source.length <= inline_limit:
                    load_external_data_for_tensor(tensor, str(base))
                else:
                    sources[tensor.name] = source
            elif len(tensor.raw_data) > inline_limit:
                staging = staging or open(base / STAGING, "wb")
                offset = staging.tell()
                staging.write(tensor.raw_data)
                sources[tensor.name] = WeightSource(base / STAGING, offset, len(tensor.raw_data), tensor.data_type)
                _refer(tensor, STAGING, offset, len(tensor.raw_data))
    finally:
        if staging is not None:
            staging.close()
    return model, sources


def fold_small_constants(model, sources: dict[str, WeightSource], limit: int = INLINE_LIMIT, passes: int = 5):
    """Constant-fold what the graph computes from its small tensors (shape arithmetic, scalar math,
    Constant nodes), with onnx-graphsurgeon, pass by pass until nothing changes; returns the new model.

    Nodes reading a weight that is not in memory (``sources``) are left alone, and no folded
    value over ``limit`` bytes is stored: the weights are never loaded, and ONNX Runtime and
    TensorRT fold such nodes themselves when they build the graph.
    """
    import onnx
    import onnx_graphsurgeon as gs
    from onnx_graphsurgeon.logger import G_LOGGER

    G_LOGGER.severity = G_LOGGER.ERROR
    for _ in range(passes):
        before = len(model.graph.node)
        graph = gs.import_onnx(onnx.shape_inference.infer_shapes(model))
        graph.fold_constants(fold_shapes=True, size_threshold=limit, error_ok=True,
                             should_exclude_node=lambda node: any(t.name in sources for t in node.inputs))
        model = gs.export_onnx(graph.cleanup(), do_type_check=False)
        if len(model.graph.node) == before:
            break
    return model


def convert_to_fp16(model, keep_fp32_ops: tuple[str, ...] = ()):
    """float16 weights and arithmetic, float32 graph inputs and outputs (onnxconverter-common);
    ``keep_fp32_ops``: op types left in float32 (the converter casts around them).

    On a graph from :func:`open_graph` the converter only re-types the weights it does not hold;
    :func:`write_graph` converts their bytes with the converter's own function. (Given a whole
    graph over 2 GB, onnxconverter-common 1.16's ``convert_float_to_float16`` fails in its shape
    inference, which cannot serialise it; its ``_model_path`` variant loads every weight.)
    """
    from onnx import TensorProto
    from onnxconverter_common.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    # Value infos left by the exporter and constant folding would keep the converter from
    # re-typing some tensors; it infers shapes itself.
    del model.graph.value_info[:]
    model = convert_float_to_float16(model, FP16_MIN_POSITIVE, FP16_MAX_FINITE, keep_io_types=True,
                                     op_block_list=list(DEFAULT_OP_BLOCK_LIST) + list(keep_fp32_ops))
    # onnxconverter-common (1.16) re-types every float tensor to float16 but leaves the graph's
    # own Cast(to=FLOAT) nodes as they are; the graph would not load. Those casts now make float16.
    float16_values = {v.name for v in model.graph.value_info if v.type.tensor_type.elem_type == TensorProto.FLOAT16}
    graph_outputs = {o.name for o in model.graph.output}
    for node in model.graph.node:
        if node.op_type == "Cast" and node.output[0] in float16_values and node.output[0] not in graph_outputs:
            for attribute in node.attribute:
                if attribute.name == "to" and attribute.i == TensorProto.FLOAT:
                    attribute.i = TensorProto.FLOAT16
    return model


def weight_bytes(model, sources: dict[str, WeightSource]) -> int:
    """Bytes the graph's initializers will take once written, in the types the graph declares."""
    from onnx import TensorProto
    from onnx.external_data_helper import uses_external_data

    total = 0
    for tensor in model.graph.initializer:
        if uses_external_data(tensor):
            source = sources[tensor.name]
            halved = source.data_type == TensorProto.FLOAT and tensor.data_type == TensorProto.FLOAT16
            total += source.length // 2 if halved else source.length
        else:
            total += len(tensor.raw_data)
    return total


def _converted(data: bytes, source: WeightSource, data_type: int) -> bytes:
    """``data`` in the graph's declared type: float32 bytes of a tensor re-typed float16 are converted."""
    from onnx import TensorProto

    if data_type == source.data_type:
        return data
    if source.data_type == TensorProto.FLOAT and data_type == TensorProto.FLOAT16:
        from onnxconverter_common.float16 import convert_np_to_float16

        return convert_np_to_float16(np.frombuffer(data, np.float32), FP16_MIN_POSITIVE, FP16_MAX_FINITE).tobytes()
    raise ValueError(f"cannot write a tensor stored as ONNX type {source.data_type} as type {data_type}")


def write_graph(model, sources: dict[str, WeightSource], path: str | os.PathLike, external: bool) -> int:
    """Write ``model`` to ``path`` with its weights; returns the bytes written (graph + data).

    ``external``: weights over :data:`EXTERNAL_MIN` bytes go to ``<path>.data`` (one file,
    page-aligned), each streamed from its source; otherwise every weight is stored inline (for
    graphs under the protobuf limit).
    """
    import onnx
    from onnx.external_data_helper import uses_external_data

    path = Path(path)
    data_path = path.with_name(path.name + DATA_SUFFIX)
    with open(data_path, "wb") if external else open(os.devnull, "wb") as data_file:
        for tensor in model.graph.initializer:
            if uses_external_data(tensor):
                source = sources[tensor.name]
                data = _converted(source.read(), source, tensor.data_type)
            elif external and len(tensor.raw_data) > EXTERNAL_MIN:
                data = tensor.raw_data
            else:
                continue
            if external:
                offset = -(-data_file.tell() // ALIGNMENT) * ALIGNMENT
                data_file.seek(offset)
                data_file.write(data)
                _refer(tensor, data_path.name, offset, len(data))
            else:
                tensor.ClearField("data_location")
                del tensor.external_data[:]
                tensor.raw_data = data
        size = data_file.tell() if external else 0
    if not external:
        data_path.unlink(missing_ok=True)
    onnx.save_model(model, str(path))
    return size + path.stat().st_size
