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

Every tensor name a component step reads or writes comes from its spec (looked up by role), and
the request's and response's from the judge contract, so renaming a tensor there renames it
here; the two python steps name their own tensors by role (prepare) or by the names written in
their config (verdict). A spec input the wiring leaves out is an error at export time, not a
server that fails to load.
"""

from __future__ import annotations

from rfad.export.triton_config import ConfigTensor, EnsembleStep, ModelConfig, spec_tensor

from rfad.components.registry import components_in
from rfad.components.specs import ComponentSpec
from rfad.contract import JUDGE_INPUTS, JUDGE_MODEL, JUDGE_OUTPUTS

PREPARE_MODEL = "rfad_judge_prepare"
VERDICT_MODEL = "rfad_judge_verdict"
JUDGE_COMPONENTS = components_in("judge")


def _contract_tensor(field) -> ConfigTensor:
    return ConfigTensor(field.name, field.datatype, field.shape, field.optional)


def _between(role: str) -> str:
    """The ensemble's name for the tensor of ``role`` passed between two steps."""
    return f"judge_{role}"


def _component_step(spec: ComponentSpec, inputs: dict[str, str], outputs: dict[str, str]) -> EnsembleStep:
    """A step over component ``spec``: tensor key -> ensemble tensor, for every input and the outputs used."""
    unwired = sorted({t.key for t in spec.inputs} - set(inputs))
    if unwired:
        raise ValueError(f"rfad_judge: inputs {unwired} of {spec.name!r} are not wired; update export/triton_judge.py")
    return EnsembleStep(spec.name, {spec.input(key).name: tensor for key, tensor in inputs.items()},
                        {spec.output(key).name: tensor for key, tensor in outputs.items()})


def judge_configs(specs: dict[str, ComponentSpec]) -> dict[str, ModelConfig]:
    """Configs of rfad_judge_prepare, rfad_judge_verdict and the rfad_judge ensemble, by model name."""
    missing = [name for name in JUDGE_COMPONENTS if name not in specs]
    if missing:
        raise ValueError(f"rfad_judge needs the components {missing} (export with --rfnet, --depth, --saliency)")
    depth, saliency, text, rfnet = specs["depth"], specs["saliency"], specs["rfnet_text"], specs["rfnet"]
    # What the prepare step produces (rfad.serving.judge_io.judge_tensors), named by role:
    # rfnet's two images and rfnet_text's inputs.
    produced = (rfnet.input("generated_image"), rfnet.input("product_image"), text.input("input_ids"),
                text.input("attention_mask"))
    probabilities, available = JUDGE_OUTPUTS.probabilities, JUDGE_OUTPUTS.available
    threshold = JUDGE_INPUTS.threshold

    prepare = ModelConfig(
        name=PREPARE_MODEL, backend="python", max_batch_size=0,
        inputs=tuple(_contract_tensor(f) for f in JUDGE_INPUTS),
        outputs=tuple(spec_tensor(t, batched=False, name=t.role) for t in produced),
    )
    # The verdict step also reads every intermediate, so a component returning NaN is named as
    # the one that did (the checks run in the order below, upstream first) rather than
    # surfacing as non-finite probabilities. Its "checks" parameter pairs each tensor with
    # the component that wrote it; rfnet's output arrives under the contract's name.
    checked = ((depth, depth.output("depth_map")), (saliency, saliency.output("saliency_map")),
               (text, text.output("caption_embeddings")))
    verdict = ModelConfig(
        name=VERDICT_MODEL, backend="python", max_batch_size=0,
        inputs=tuple(spec_tensor(t, batched=False) for _, t in checked)
        + (spec_tensor(rfnet.output("probabilities"), batched=False, name=probabilities.name), _contract_tensor(threshold)),
        outputs=(_contract_tensor(available),),
        parameters={"checks": ",".join([f"{spec.name}:{t.name}" for spec, t in checked]
                                       + [f"{rfnet.name}:{probabilities.name}"])},
    )
    images = _between("generated_image")
    steps = (
        EnsembleStep(PREPARE_MODEL, {f.name: f.name for f in JUDGE_INPUTS}, {t.role: _between(t.role) for t in produced}),
        _component_step(depth, {"images": images}, {"depth_map": _between("depth_map")}),
        _component_step(saliency, {"images": images}, {"saliency_map": _between("saliency_map")}),
        _component_step(text, {key: _between(key) for key in ("input_ids", "attention_mask")},
                        {"caption_embeddings": _between("caption_embeddings")}),
        _component_step(rfnet, {**{key: _between(key) for key in ("generated_image", "product_image", "depth_map",
                                                                    "saliency_map", "caption_embeddings")},
                                "caption_mask": _between("attention_mask")}, {"probabilities": probabilities.name}),
        EnsembleStep(VERDICT_MODEL, {**{t.name: _between(t.role) for _, t in checked}, probabilities.name: probabilities.name,
                                     threshold.name: threshold.name}, {available.name: available.name}),
    )
    ensemble = ModelConfig(
        name=JUDGE_MODEL, backend="ensemble", max_batch_size=0,
        inputs=tuple(_contract_tensor(f) for f in JUDGE_INPUTS),
        outputs=tuple(_contract_tensor(f) for f in JUDGE_OUTPUTS), steps=steps,
    )
    return {PREPARE_MODEL: prepare, VERDICT_MODEL: verdict, JUDGE_MODEL: ensemble}
