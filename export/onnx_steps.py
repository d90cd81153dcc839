"""The steps of ``rfad-export onnx``, each sized to run in a process of its own.

1. :func:`inspect_models`: the model facts, what each component weighs, the tokenizers.
2. :func:`trace_step` (per component): the component's PyTorch module -> reference outputs of
   the parity cases (``reference.npz``; for an fp16 export, its float16 outputs too) and the
   raw graph (``torch.onnx.export``, the TorchScript-based exporter: 10-30x faster than dynamo
   on these models).
3. :func:`finish_step` (per component): the raw graph without its weights -> small constants
   folded -> optionally float16 -> ``model.onnx`` (+ ``model.onnx.data`` over the external-data
   threshold) with the weights streamed -> compared with the references in onnxruntime.

Step 2 holds the PyTorch weights (memory-mapped from safetensors: only the component's own
weights become resident), step 3 the graph in onnxruntime; neither holds both.
:func:`rfad.export.onnx_export.export_onnx` runs each in a fresh process.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from rfad.components.modules import component_modules, model_facts
from rfad.components.registry import COMPONENTS, component_specs
from rfad.components.samples import check_side, sample_inputs
from rfad.components.specs import ComponentSpec, ModelFacts
from rfad.export.graph_files import convert_to_fp16, fold_small_constants, open_graph, weight_bytes, write_graph
from rfad.export.parity import NO_HALF, compare_with_references, half_reference_cases, reference_cases
from rfad.models.model_set import ModelSet

REFERENCES = "reference.npz"
RAW = "raw.onnx"


def quiet_export_logs() -> None:
    """Optimizer notes from onnxruntime, the graph tools' per-pass summaries and the tracer's
    warnings about Python control flow (the specs' parity checks catch what they warn about)
    would drown the one line per component that export prints."""
    import warnings

    import onnxruntime
    from polygraphy.logger import G_LOGGER

    from rfad.logs import quiet_third_party

    quiet_third_party()
    onnxruntime.set_default_logger_severity(3)
    G_LOGGER.module_severity = G_LOGGER.ERROR
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*", category=DeprecationWarning)
    # fp16 conversion clamps float32 constants outside float16's range (e.g. -inf attention-mask
    # fills become -1e4, 1e-12 epsilons 1e-7), once per constant: expected, and the parity check
    # measures the effect.
    warnings.filterwarnings("ignore", message="the float32 number .* will be truncated to", category=UserWarning)
    # The TorchScript exporter's notes on what it leaves to others: a strided Slice it does not fold
    # (graph_files folds the graph's constants afterwards), and advanced indexing that would be wrong
    # for negative indices (the parity check runs the graph against PyTorch). Neither asks anything
    # of the user; `rfad demo` printed them for the miniature world's VAE encoder and caption encoder.
    warnings.filterwarnings("ignore", message="Constant folding - Only steps=1 can be constant folded",
                            category=UserWarning)
    warnings.filterwarnings("ignore", message="Exporting aten::index operator of advanced indexing",
                            category=UserWarning)


def load_models(model_set: ModelSet, groups: tuple[str, ...] = ("diffusion", "judge")):
    """``(diffusion, judge)`` models of ``groups`` (frozen, CPU, fp32; None for a group not asked
    for, and for the judge when the set has no RFNet; group ``screen`` loads the judge models with
    the screening RFNet). Weights are memory-mapped: loading costs little memory until a module runs."""
    from rfad.models.diffusion import load_diffusion_models
    from rfad.models.judge import load_judge_models

    diffusion = load_diffusion_models(model_set) if "diffusion" in groups else None
    judged = "judge" in groups or "screen" in groups
    judge = load_judge_models(model_set) if judged and model_set.rfnet is not None else None
    return diffusion, judge


def component_graphs(diffusion, judge=None) -> dict[str, torch.nn.Module]:
    """The module exported for each registered component the models provide (judge ones with
    ``judge``): :func:`rfad.components.modules.component_modules`, in eval mode."""
    return {name: module.eval() for name, module in component_modules(diffusion, judge).items()}


def vocab_size_of(spec: ComponentSpec, diffusion, judge) -> int:
    """Token ids the sample inputs may hold: the text encoder's or RoBERTa's vocabulary (else unused)."""
    if spec.name == "text_encoder":
        return int(diffusion.text_encoder.config.vocab_size)
    if spec.name == "rfnet_text":
        return int(judge.rfnet.text_encoder.config.vocab_size)
    if spec.name == "screen_rfnet_text":
        return int(judge.screen_rfnet.text_encoder.config.vocab_size)
    return 300


def trace_to_onnx(graph, spec: ComponentSpec, facts: ModelFacts, vocab: int, opset: int, raw: Path) -> None:
    """``torch.onnx.export`` of ``graph`` with the spec's names and dynamic axes to ``raw`` (the
    exporter writes one file per weight beside it when the graph is over 2 GB)."""
    side = check_side(facts)
    # Batch 2 at export: with batch 1 the tracer folds the batch into attention reshapes.
    arrays = sample_inputs(spec, 2, side, side, vocab=vocab)
    raw.parent.mkdir(parents=True, exist_ok=True)
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


def finish_graph(raw: Path, path: Path, external_data_threshold: int, fp16: bool = False) -> dict:
    """The raw graph at ``raw`` -> ``path`` (model.onnx, with model.onnx.data when its weights are
    over ``external_data_threshold`` bytes); returns the file facts of the manifest.

    ``fp16``: weights and arithmetic in float16 (onnxconverter-common's converter), inputs and
    outputs kept float32 (``keep_io_types``), so the spec, the runners and the Triton configs
    are the same for both precisions. Ops the converter knows to be unsafe in fp16 stay fp32.
    """
    model, sources = open_graph(raw)
    model = fold_small_constants(model, sources)
    if fp16:
        model = convert_to_fp16(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (path, path.with_name(path.name + ".data")):
        stale.unlink(missing_ok=True)
    external = weight_bytes(model, sources) > external_data_threshold
    size = write_graph(model, sources, path, external)
    return {"file": f"{path.parent.name}/{path.name}", "external_data": external, "bytes": size}


# The steps below run in processes of their own (rfad.isolated): arguments and results
# are plain values, and each step reads and writes its files in a work folder per component.


def inspect_models(model_set: ModelSet, renames: dict | None, out: Path) -> dict:
    """Facts, scheduler and VAE constants, the components the set provides with the fp32 bytes of
    each one's weights, the vocabulary of each; the tokenizers are saved to ``out``."""
    quiet_export_logs()
    diffusion, judge = load_models(model_set)
    graphs = component_graphs(diffusion, judge)
    # Sizes come from the parameters' metadata: nothing is read from the weight files.
    weights = {name: sum(p.numel() * p.element_size() for p in graph.parameters()) for name, graph in graphs.items()}
    facts = model_facts(diffusion, judge)
    specs = component_specs(facts, renames)
    out.mkdir(parents=True, exist_ok=True)
    diffusion.tokenizer.save_pretrained(out / "tokenizer")
    if judge is not None:
        judge.caption_tokenizer.save_pretrained(out / "caption_tokenizer")
    return {
        "facts": facts.to_dict(), "weight_bytes": weights, "has_judge": judge is not None,
        "vocab": {name: vocab_size_of(specs[name], diffusion, judge) for name in graphs},
        "scheduler_config": dict(diffusion.scheduler_config),
        "vae_scale_factor": 2 ** (len(diffusion.vae.config.block_out_channels) - 1),
    }


def trace_step(model_set: ModelSet, name: str, facts: dict, renames: dict | None, vocab: int, opset: int,
               work: Path, fp16: bool = False) -> bool | None:
    """Load the models of ``name``'s group, export the raw graph to ``work`` and save the parity
    references there; ``fp16``: PyTorch's float16 outputs too, after the trace (the module is
    converted in place, so no second copy is held). Returns whether those exist (None: not asked)."""
    quiet_export_logs()
    facts = ModelFacts.from_dict(facts)
    spec = component_specs(facts, renames)[name]
    diffusion, judge = load_models(model_set, (COMPONENTS[name].group,))
    graph = component_graphs(diffusion, judge)[name]
    work.mkdir(parents=True, exist_ok=True)
    cases = reference_cases(graph, spec, facts, vocab)
    trace_to_onnx(graph, spec, facts, vocab, opset, work / RAW)
    half = half_reference_cases(graph, spec, cases) if fp16 else {}
    np.savez(work / REFERENCES, **cases, **half)
    return NO_HALF not in half if fp16 else None


def finish_step(spec: dict, work: Path, path: Path, external_data_threshold: int, fp16: bool) -> tuple[dict, list]:
    """Finish the raw graph in ``work`` to ``path`` and compare it with the references; removes ``work``.
    Returns (file facts, parity rows)."""
    quiet_export_logs()
    spec = ComponentSpec.from_dict(spec)
    files = finish_graph(work / RAW, path, external_data_threshold, fp16)
    with np.load(work / REFERENCES) as references:
        rows = compare_with_references(spec, path, dict(references), "fp16" if fp16 else "fp32")
    shutil.rmtree(work)
    return files, rows
