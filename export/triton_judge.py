"""The ``rfad_judge`` Triton ensemble: RFNet's inspection alone, generated from the contract and the specs.

    rfad_judge (ensemble, max_batch_size 0)
      rfad_judge_prepare (python)  images, product, caption -> generated_image, product_image,
                                   input_ids, attention_mask (one row per image)
      depth, saliency              generated_image -> depth_map, saliency_map
      rfnet_text                   input_ids, attention_mask -> caption_embeddings
      rfnet                        product_image, generated_image, maps, caption -> probabilities
      rfad_judge_verdict (python)  depth_map, saliency_map, caption_embeddings, probabilities,
                                   threshold -> available (non-finite values fail the request,
                                   naming the component that produced them)

Every tensor name a step reads or writes comes from a component spec (or the judge contract),
so renaming a tensor there renames it here; a spec that no longer has a name the wiring needs
is an error at export time, not a server that fails to load.
"""

from __future__ import annotations

from rfad.export.triton_config import (
    NUMPY_TO_TRITON,
    ConfigTensor,
    EnsembleStep,
    ModelConfig,
)

from rfad.components.specs import ComponentSpec, TensorSpec
from rfad.contract import JUDGE_INPUTS, JUDGE_MODEL, JUDGE_OUTPUTS

PREPARE_MODEL = "rfad_judge_prepare"
VERDICT_MODEL = "rfad_judge_verdict"
JUDGE_COMPONENTS = ("depth", "saliency", "rfnet_text", "rfnet")


def _tensor(spec: TensorSpec) -> ConfigTensor:
    """A spec tensor with its batch axis kept (the judge's python steps have max_batch_size 0)."""
    return ConfigTensor(spec.name, NUMPY_TO_TRITON[spec.dtype], tuple(-1 if isinstance(d, str) else d for d in spec.shape))


def _contract_tensor(field) -> ConfigTensor:
    return ConfigTensor(field.name, field.datatype, field.shape, field.optional)


def _find(spec: ComponentSpec, name: str, outputs: bool = False) -> TensorSpec:
    tensors = spec.outputs if outputs else spec.inputs
    for tensor in tensors:
        if tensor.name == name:
            return tensor
    raise ValueError(f"rfad_judge: component {spec.name!r} has no {'output' if outputs else 'input'} {name!r} "
                     f"(has {[t.name for t in tensors]}); update export/triton_judge.py with the spec")


def judge_configs(specs: dict[str, ComponentSpec]) -> dict[str, ModelConfig]:
    """Configs of rfad_judge_prepare, rfad_judge_verdict and the rfad_judge ensemble, by model name."""
    missing = [name for name in JUDGE_COMPONENTS if name not in specs]
    if missing:
        raise ValueError(f"rfad_judge needs the components {missing} (export with --rfnet, --depth, --saliency)")
    depth, saliency, text, rfnet = (specs[name] for name in JUDGE_COMPONENTS)
    # What the prepare step produces: rfnet's two images and rfnet_text's two inputs.
    generated, product = _find(rfnet, "generated_image"), _find(rfnet, "product_image")
    ids, mask = text.inputs
    probabilities = _find(rfnet, "probabilities", outputs=True)
    available = next(f for f in JUDGE_OUTPUTS if f.name == "available")
    threshold = next(f for f in JUDGE_INPUTS if f.name == "threshold")

    prepare = ModelConfig(
        name=PREPARE_MODEL, backend="python", max_batch_size=0,
        inputs=tuple(_contract_tensor(f) for f in JUDGE_INPUTS),
        outputs=tuple(_tensor(t) for t in (generated, product, ids, mask)),
    )
    # The verdict step also reads every intermediate, so a component returning NaN is named as
    # the one that did (the checks run in the order below, upstream first) rather than
    # surfacing as non-finite probabilities. Its "checks" parameter pairs each tensor with
    # the component that wrote it.
    checked = ((depth, depth.outputs[0]), (saliency, saliency.outputs[0]), (text, text.outputs[0]),
               (rfnet, probabilities))
    verdict = ModelConfig(
        name=VERDICT_MODEL, backend="python", max_batch_size=0,
        inputs=tuple(_tensor(t) for _, t in checked) + (_contract_tensor(threshold),),
        outputs=(_contract_tensor(available),),
        parameters={"checks": ",".join(f"{spec.name}:{t.name}" for spec, t in checked)},
    )
    # Ensemble tensors: the request's and the response's names, plus one per intermediate.
    t_generated, t_product, t_ids, t_mask = "judge_generated_image", "judge_product_image", "judge_input_ids", "judge_mask"
    t_depth, t_saliency, t_caption = "judge_depth_map", "judge_saliency_map", "judge_caption_embeddings"
    rfnet_inputs = {generated.name: t_generated, product.name: t_product,
                    _find(rfnet, "depth_map").name: t_depth, _find(rfnet, "saliency_map").name: t_saliency,
                    _find(rfnet, "caption_embeddings").name: t_caption, _find(rfnet, "caption_mask").name: t_mask}
    if set(rfnet_inputs) != set(rfnet.input_names):
        raise ValueError(f"rfad_judge: rfnet's inputs {rfnet.input_names} are not all wired; update export/triton_judge.py")
    steps = (
        EnsembleStep(PREPARE_MODEL, {f.name: f.name for f in JUDGE_INPUTS},
                     {generated.name: t_generated, product.name: t_product, ids.name: t_ids, mask.name: t_mask}),
        EnsembleStep("depth", {depth.inputs[0].name: t_generated}, {depth.outputs[0].name: t_depth}),
        EnsembleStep("saliency", {saliency.inputs[0].name: t_generated}, {saliency.outputs[0].name: t_saliency}),
        EnsembleStep("rfnet_text", {ids.name: t_ids, mask.name: t_mask}, {text.outputs[0].name: t_caption}),
        EnsembleStep("rfnet", rfnet_inputs, {probabilities.name: "probabilities"}),
        EnsembleStep(VERDICT_MODEL, {depth.outputs[0].name: t_depth, saliency.outputs[0].name: t_saliency,
                                     text.outputs[0].name: t_caption, probabilities.name: "probabilities",
                                     threshold.name: threshold.name},
                     {available.name: available.name}),
    )
    ensemble = ModelConfig(
        name=JUDGE_MODEL, backend="ensemble", max_batch_size=0,
        inputs=tuple(_contract_tensor(f) for f in JUDGE_INPUTS),
        outputs=tuple(_contract_tensor(f) for f in JUDGE_OUTPUTS), steps=steps,
    )
    return {PREPARE_MODEL: prepare, VERDICT_MODEL: verdict, JUDGE_MODEL: ensemble}
