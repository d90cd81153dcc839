"""``rfad-export onnx``: every component to ONNX, cleaned, checked against PyTorch at two shapes.

For each component of :func:`rfad.components.registry.component_specs`: export its wrapper
(:data:`rfad.export.wrappers.WRAPPERS`) with the spec's names and dynamic axes (the
TorchScript-based exporter: 10-30x faster than dynamo on these models, NOTES.md), fold
constants with polygraphy, save with external data when the graph is over the protobuf limit,
then run it in onnxruntime against the PyTorch module at two shapes (different batch,
non-square image) and record the max abs difference per output in ``parity.json``. A
difference over tolerance is an :class:`ExportError`.

The output folder is self-describing: ``manifest.json`` (an
:class:`rfad.components.manifest.ExportManifest`: facts, specs, files, settings),
``tokenizer/`` (CLIP) and ``caption_tokenizer/`` (RFNet's), and one ``<component>/model.onnx``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from rfad.components.manifest import ExportManifest
from rfad.components.registry import COMPONENTS, component_specs
from rfad.components.specs import ComponentSpec, ModelFacts
from rfad.export.tolerances import PARITY_TOLERANCE
from rfad.models.model_set import ModelSet

PROTOBUF_LIMIT = 2 * 1024**3


class ExportError(RuntimeError):
    """Export or its parity check failed; the message names the component (and output)."""


def probe_facts(diffusion, judge=None) -> ModelFacts:
    """Read the per-checkpoint sizes: one ControlNet call at a 64-px input gives every residual's
    channels and downscale factor, whatever the architecture."""
    text_dim = int(diffusion.text_encoder.config.hidden_size)
    with torch.no_grad():
        down, mid = diffusion.controlnet(
            torch.zeros(1, 4, 8, 8), torch.tensor([1.0]), encoder_hidden_states=torch.zeros(1, 77, text_dim),
            controlnet_cond=torch.zeros(1, 3, 64, 64), return_dict=False,
        )
    judge_facts = {}
    if judge is not None:
        judge_facts = dict(rfnet_width=int(judge.rfnet.config.width), num_classes=int(judge.rfnet.config.num_classes),
                           caption_tokens=int(judge.caption_tokenizer.model_max_length),
                           judge_size=int(judge.rfnet.config.image_size))
    return ModelFacts(
        text_dim=text_dim, text_tokens=int(diffusion.tokenizer.model_max_length),
        latent_channels=int(diffusion.vae.config.latent_channels), unet_in_channels=int(diffusion.unet.config.in_channels),
        down_residuals=tuple((int(d.shape[1]), 8 // int(d.shape[2])) for d in down),
        mid_residual=(int(mid.shape[1]), 8 // int(mid.shape[2])), **judge_facts,
    )


def component_graphs(diffusion, judge=None) -> dict[str, torch.nn.Module]:
    """The module exported for each registered component the models provide (judge ones with ``judge``)."""
    from rfad.export.wrappers import WRAPPERS, check_wrappers

    check_wrappers()
    return {name: WRAPPERS[name](diffusion, judge).eval() for name, component in COMPONENTS.items()
            if component.group == "diffusion" or judge is not None}


def pixel_multiple(facts: ModelFacts) -> int:
    """Image sides must be multiples of this: the latent is halved down to the coarsest residual."""
    return 8 * max([facts.mid_residual[1]] + [f for _, f in facts.down_residuals])


def sample_inputs(spec: ComponentSpec, batch: int, height: int, width: int, seed: int = 0,
                  vocab: int = 300) -> dict[str, np.ndarray]:
    """Random inputs of the spec's shapes by tensor name, in the ranges the loop feeds (ids in the
    vocabulary, timesteps in [0, 1000), images in [0, 1], masks with padding after the first tokens)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for tensor in spec.inputs:
        shape = spec.shape_of(tensor, batch, height, width)
        if tensor.role == "input_ids":
            arrays[tensor.name] = rng.integers(3, vocab, shape).astype(np.int64)
        elif tensor.dtype == "int64":  # attention / caption masks
            mask = np.ones(shape, np.int64)
            mask[:, max(2, shape[1] // 2):] = 0
            arrays[tensor.name] = mask
        elif tensor.role == "timestep":
            arrays[tensor.name] = rng.uniform(0, 999, shape).astype(np.float32)
        elif tensor.role == "conditioning_scale":
            arrays[tensor.name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        else:
            arrays[tensor.name] = rng.random(shape, dtype=np.float32)
    return arrays


def _torch_outputs(graph, spec: ComponentSpec, arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        out = graph(*(torch.from_numpy(arrays[name]) for name in spec.input_names))
    out = out if isinstance(out, (tuple, list)) else (out,)
    return [o.float().numpy() for o in out]


def vocab_size_of(spec: ComponentSpec, diffusion, judge) -> int:
    """Token ids the sample inputs may hold: the text encoder's or RoBERTa's vocabulary (else unused)."""
    if spec.name == "text_encoder":
        return int(diffusion.text_encoder.config.vocab_size)
    if spec.name == "rfnet_text":
        return int(judge.rfnet.text_encoder.config.vocab_size)
    return 300


def quiet_export_logs() -> None:
    """Optimizer notes from onnxruntime, polygraphy's per-pass folding summaries and the tracer's
    warnings about Python control flow (the specs' parity checks catch what they warn about)
    would drown the one line per component that export prints."""
    import warnings

    import onnxruntime
    from polygraphy.logger import G_LOGGER

    onnxruntime.set_default_logger_severity(3)
    G_LOGGER.module_severity = G_LOGGER.ERROR
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*", category=DeprecationWarning)
    # fp16 conversion clamps float32 constants outside float16's range (e.g. -inf attention-mask
    # fills become -1e4, 1e-12 epsilons 1e-7), once per constant: expected, and the parity check
    # measures the effect.
    warnings.filterwarnings("ignore", message="the float32 number .* will be truncated to", category=UserWarning)


def convert_to_fp16(model):
    """float16 weights and arithmetic, float32 graph inputs and outputs (onnxconverter-common)."""
    from onnx import TensorProto
    from onnxconverter_common.float16 import convert_float_to_float16

    # Value infos left by the exporter and constant folding would keep the converter from
    # re-typing some tensors; it infers shapes itself.
    del model.graph.value_info[:]
    model = convert_float_to_float16(model, keep_io_types=True)
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


def export_component(graph, spec: ComponentSpec, path: Path, facts: ModelFacts, opset: int,
                     external_data_threshold: int, vocab: int, fp16: bool = False) -> dict:
    """Export one graph to ``path`` (model.onnx); returns file facts.

    ``fp16``: weights and arithmetic in float16 (onnxconverter-common's converter), inputs and
    outputs kept float32 (``keep_io_types``), so the spec, the runners and the Triton configs
    are the same for both precisions. Ops the converter knows to be unsafe in fp16 stay fp32.
    """
    import onnx
    from polygraphy.backend.onnx import fold_constants

    quiet_export_logs()

    m = pixel_multiple(facts)
    side = max(64, 2 * m)
    # Batch 2 at export: with batch 1 the tracer folds the batch into attention reshapes.
    arrays = sample_inputs(spec, 2, side, side, vocab=vocab)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = path.with_name("raw.onnx")
    # PyTorch's fused transformer kernel (used by RFNet's fusion layers in eval) has no ONNX
    # export; the unfused path computes the same.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad():
            torch.onnx.export(graph, tuple(torch.from_numpy(arrays[n]) for n in spec.input_names), str(raw),
                              input_names=spec.input_names, output_names=spec.output_names,
                              dynamic_axes=spec.dynamic_axes(), opset_version=opset, do_constant_folding=True,
                              dynamo=False)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    model = onnx.load(str(raw), load_external_data=True)
    model = fold_constants(model, error_ok=True)
    if fp16:
        model = convert_to_fp16(model)
    for leftover in path.parent.iterdir():
        if leftover.name != "raw.onnx":
            leftover.unlink()
    external = model.ByteSize() > external_data_threshold
    onnx.save_model(model, str(path), save_as_external_data=external, all_tensors_to_one_file=True,
                    location="model.onnx.data" if external else None)
    for leftover in path.parent.iterdir():
        if leftover.name not in ("model.onnx", "model.onnx.data"):
            leftover.unlink()
    return {"file": f"{spec.name}/model.onnx", "external_data": external,
            "bytes": sum(p.stat().st_size for p in path.parent.iterdir())}


def check_parity(graph, spec: ComponentSpec, path: Path, facts: ModelFacts, vocab: int,
                 precision: str = "fp32") -> list[dict]:
    """Max abs difference per output between onnxruntime and PyTorch (fp32) at two shapes."""
    from rfad.onnx_session import open_session

    session = open_session(path, precision)
    m = pixel_multiple(facts)
    side = max(64, 2 * m)
    shapes = [(3, side, side), (1, side, side + m)]  # other batches than the export's 2; then H != W
    rows = []
    for i, (batch, height, width) in enumerate(shapes):
        arrays = sample_inputs(spec, batch, height, width, seed=i + 1, vocab=vocab)
        reference = _torch_outputs(graph, spec, arrays)
        results = session.run(spec.output_names, arrays)
        for name, ref, got in zip(spec.output_names, reference, results, strict=True):
            if got.shape != ref.shape:
                raise ExportError(f"{spec.name}: output {name} has shape {got.shape} in onnxruntime, {ref.shape} in "
                                  f"PyTorch at batch {batch}, {height}x{width}")
            scale = max(1.0, float(np.abs(ref).max()))
            diff = float(np.abs(got.astype(np.float32) - ref).max())
            tolerance = PARITY_TOLERANCE[precision] * scale
            rows.append({"component": spec.name, "output": name, "shape": list(ref.shape), "max_abs_diff": diff,
                         "tolerance": tolerance, "ok": diff <= tolerance})
    return rows


def load_models(model_set: ModelSet):
    """Diffusion models and, when the set has an RFNet, the judge models (frozen, CPU, fp32)."""
    from rfad.models.diffusion import load_diffusion_models
    from rfad.models.judge import load_judge_models

    diffusion = load_diffusion_models(model_set)
    judge = load_judge_models(model_set) if model_set.rfnet is not None else None
    return diffusion, judge


def export_onnx(model_set: ModelSet, out: str | Path, components: list[str] | None = None, opset: int = 17,
                external_data_threshold: int = PROTOBUF_LIMIT, fp16: bool = False, echo=print,
                renames: dict[str, dict[str, str]] | None = None) -> ExportManifest:
    """Export ``components`` (default: all the set provides) to ``out``; returns the manifest.

    ``fp16``: every graph with float16 weights and arithmetic (float32 inputs and outputs),
    checked against the float32 PyTorch modules with :data:`PARITY_TOLERANCE` ``["fp16"]``.
    ``renames``: component -> {tensor key -> name}, tensors named otherwise than their roles
    (:func:`rfad.components.registry.component_specs`); the graphs, the manifest and everything
    built from it use those names.
    """
    quiet_export_logs()
    out = Path(out)
    diffusion, judge = load_models(model_set)
    facts = probe_facts(diffusion, judge)
    specs = component_specs(facts, renames)
    graphs = component_graphs(diffusion, judge)
    available = list(specs)
    chosen = components or available
    unknown = [name for name in chosen if name not in available]
    if unknown:
        raise ExportError(f"unknown or unavailable components {unknown}; available: {available}"
                          + ("" if judge else " (judge components need --rfnet, --depth, --saliency)"))
    out.mkdir(parents=True, exist_ok=True)
    precision = "fp16" if fp16 else "fp32"
    files, parity = {}, []
    for name in chosen:
        start = time.perf_counter()
        spec, vocab = specs[name], vocab_size_of(specs[name], diffusion, judge)
        try:
            files[name] = export_component(graphs[name], spec, out / name / "model.onnx", facts, opset,
                                           external_data_threshold, vocab, fp16=fp16)
        except ExportError:
            raise
        except Exception as exc:  # the exporter's own errors are long; name the component first
            raise ExportError(f"{name}: export failed: {type(exc).__name__}: {exc}") from exc
        rows = check_parity(graphs[name], spec, out / name / "model.onnx", facts, vocab, precision)
        parity += rows
        worst = max(rows, key=lambda r: r["max_abs_diff"] / r["tolerance"])
        echo(f"{name:<16} {time.perf_counter() - start:6.1f} s  {files[name]['bytes'] / 1e6:8.2f} MB  "
             f"max |onnx - torch| {worst['max_abs_diff']:.2e} ({worst['output']})")
    (out / "parity.json").write_text(json.dumps({"precision": precision, "rows": parity}, indent=2) + "\n")
    failed = [r for r in parity if not r["ok"]]
    if failed:
        f = failed[0]
        raise ExportError(f"parity check failed for {f['component']} output {f['output']}: max abs diff "
                          f"{f['max_abs_diff']:.3g} > tolerance {f['tolerance']:.3g} (see {out / 'parity.json'})")
    diffusion.tokenizer.save_pretrained(out / "tokenizer")
    if judge is not None:
        judge.caption_tokenizer.save_pretrained(out / "caption_tokenizer")
    manifest = ExportManifest(
        facts=facts, specs={name: specs[name] for name in chosen}, scheduler_config=dict(diffusion.scheduler_config),
        vae_scale_factor=2 ** (len(diffusion.vae.config.block_out_channels) - 1), precision=precision, opset=opset,
        files=files, models={k: str(v) for k, v in vars(model_set).items() if isinstance(v, Path)},
    )
    manifest.write(out / "manifest.json")
    return manifest
