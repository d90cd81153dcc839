"""``config.pbtxt`` for Triton models, rendered from declarations (contract, component specs).

One renderer for every model in the repository; a model's tensors come from the declaration
that also drives export and the BLS calls, so renaming a tensor is a change in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rfad.components.specs import TensorSpec
from rfad.serving.pipeline_parameters import PipelineParameters

# Triton's config names for the contract's datatypes (BYTES is TYPE_STRING in model configs).
CONFIG_TYPES = {"BYTES": "TYPE_STRING", "BOOL": "TYPE_BOOL", "INT32": "TYPE_INT32", "INT64": "TYPE_INT64",
                "FP16": "TYPE_FP16", "FP32": "TYPE_FP32"}
NUMPY_TO_TRITON = {"float32": "FP32", "float16": "FP16", "int64": "INT64", "int32": "INT32", "bool": "BOOL",
                   "object": "BYTES", "bytes": "BYTES"}


@dataclass(frozen=True)
class ConfigTensor:
    name: str
    datatype: str  # Triton datatype (FP32, INT64, BYTES, ...)
    dims: tuple[int, ...]  # without the batch dimension when max_batch_size > 0; -1 = variable
    optional: bool = False
    reshape: tuple[int, ...] | None = None  # the shape the model sees, when it differs from dims


def spec_tensor(tensor: TensorSpec, batched: bool = True, name: str | None = None) -> ConfigTensor:
    """A component tensor in a config (as ``name``, default its own): for a batched model
    (max_batch_size > 0) without the batch axis, as :attr:`TensorSpec.triton_dims` says."""
    if not batched:
        return ConfigTensor(name or tensor.name, NUMPY_TO_TRITON[tensor.dtype], tensor.dims)
    return ConfigTensor(name or tensor.name, NUMPY_TO_TRITON[tensor.dtype], tensor.triton_dims,
                        reshape=tensor.triton_reshape)


@dataclass(frozen=True)
class EnsembleStep:
    """One step of an ensemble: the model, and its tensor names -> the ensemble's tensor names."""

    model_name: str
    input_map: dict[str, str]
    output_map: dict[str, str]


@dataclass(frozen=True)
class ModelConfig:
    name: str
    inputs: tuple[ConfigTensor, ...]
    outputs: tuple[ConfigTensor, ...]
    backend: str = "python"  # python | onnxruntime | tensorrt | ensemble
    max_batch_size: int = 0
    dynamic_batching: bool = False
    max_queue_delay_us: int = 2000
    preferred_batch_sizes: tuple[int, ...] = ()  # dynamic batching: dispatch as soon as one is reached
    instance_kind: str = "KIND_CPU"
    instance_count: int = 1
    parameters: dict = field(default_factory=dict)
    steps: tuple[EnsembleStep, ...] = ()  # ensemble only


def _tensor(tensor: ConfigTensor) -> str:
    lines = [f'    name: "{tensor.name}"', f"    data_type: {CONFIG_TYPES[tensor.datatype]}",
             f"    dims: [ {', '.join(str(d) for d in tensor.dims)} ]"]
    if tensor.optional:
        lines.append("    optional: true")
    if tensor.reshape is not None:
        lines.append(f"    reshape: {{ shape: [ {', '.join(str(d) for d in tensor.reshape)} ] }}")
    return "  {\n" + "\n".join(lines) + "\n  }"


def _step(step: EnsembleStep) -> str:
    lines = [f'      model_name: "{step.model_name}"', "      model_version: -1"]
    for kind, mapping in (("input_map", step.input_map), ("output_map", step.output_map)):
        for key, value in mapping.items():
            lines.append(f'      {kind} {{ key: "{key}" value: "{value}" }}')
    return "    {\n" + "\n".join(lines) + "\n    }"


def render_config(config: ModelConfig) -> str:
    """The config.pbtxt text of ``config``."""
    lines = [f'name: "{config.name}"']
    if config.backend == "python":
        lines.append('backend: "python"')
    elif config.backend == "onnxruntime":
        lines.append('platform: "onnxruntime_onnx"')
    elif config.backend == "tensorrt":
        lines.append('platform: "tensorrt_plan"')
    elif config.backend == "ensemble":
        lines.append('platform: "ensemble"')
    else:
        raise ValueError(f"backend: {config.backend!r} is not one of python, onnxruntime, tensorrt, ensemble")
    lines.append(f"max_batch_size: {config.max_batch_size}")
    lines.append("input [\n" + ",\n".join(_tensor(t) for t in config.inputs) + "\n]")
    lines.append("output [\n" + ",\n".join(_tensor(t) for t in config.outputs) + "\n]")
    if config.dynamic_batching:
        preferred = (f"  preferred_batch_size: [ {', '.join(map(str, config.preferred_batch_sizes))} ]\n"
                     if config.preferred_batch_sizes else "")
        lines.append(f"dynamic_batching {{\n{preferred}  max_queue_delay_microseconds: {config.max_queue_delay_us}\n}}")
    if config.backend == "ensemble":  # the ensemble scheduler has no instances of its own
        lines.append("ensemble_scheduling {\n  step [\n" + ",\n".join(_step(s) for s in config.steps) + "\n  ]\n}")
    else:
        lines.append(f"instance_group [\n  {{\n    kind: {config.instance_kind}\n    count: {config.instance_count}\n  }}\n]")
    for key, value in sorted(config.parameters.items()):
        lines.append(f'parameters {{\n  key: "{key}"\n  value: {{ string_value: "{value}" }}\n}}')
    return "\n".join(lines) + "\n"


def pipeline_config(parameters: PipelineParameters | None = None, instance_count: int = 1,
                    execution_env: str | None = None) -> ModelConfig:
    """The rfad_pipeline BLS model's config: tensors from the request contract, parameters
    (attempts cap, canvas size, judge mode; defaults from :class:`PipelineParameters`)."""
    from rfad.contract import PIPELINE_INPUTS, PIPELINE_MODEL, PIPELINE_OUTPUTS

    values = (parameters or PipelineParameters()).to_config()
    if execution_env:
        values["EXECUTION_ENV_PATH"] = execution_env
    return ModelConfig(
        name=PIPELINE_MODEL,
        inputs=tuple(ConfigTensor(f.name, f.datatype, f.shape, f.optional) for f in PIPELINE_INPUTS),
        outputs=tuple(ConfigTensor(f.name, f.datatype, f.shape) for f in PIPELINE_OUTPUTS),
        backend="python", max_batch_size=0, instance_count=instance_count, parameters=values,
    )
