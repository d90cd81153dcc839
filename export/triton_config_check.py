"""Check ``config.pbtxt`` files against Triton's own ``ModelConfig`` message.

The local server loads only python models, so an ``onnxruntime`` or ``tensorrt`` config would
otherwise meet Triton for the first time in production. Parsing with protobuf's ``text_format``
into ``tritonclient.grpc.model_config_pb2.ModelConfig`` (the message Triton itself parses) catches
a misspelt field, a wrong enum (``KIND_GPUU``, ``TYPE_FLOAT``) or a wrong type; the few rules
below catch what Triton checks when it loads the repository beyond the message's grammar.
"""

from __future__ import annotations

from pathlib import Path


class ConfigError(ValueError):
    """A config that Triton would refuse; the message names the file and the problem."""


def parse_model_config(text: str, source: str = "config.pbtxt"):
    """``text`` as Triton's ``ModelConfig`` message, or :class:`ConfigError` naming ``source``."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        raise ConfigError(f'{source}: checking needs tritonclient (pip install "rfad[serve]"): {exc}') from None
    try:
        config = text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise ConfigError(f"{source}: not a Triton ModelConfig: {exc}") from None
    problems = []
    if not config.name:
        problems.append("no name")
    if not (config.backend or config.platform):
        problems.append("neither backend nor platform")
    batching = config.dynamic_batching
    if config.HasField("dynamic_batching") and config.max_batch_size == 0:
        problems.append("dynamic_batching needs max_batch_size > 0")
    too_big = [size for size in batching.preferred_batch_size if not 0 < size <= config.max_batch_size]
    if too_big:
        problems.append(f"preferred_batch_size {too_big} outside 1..max_batch_size {config.max_batch_size}")
    if config.platform == "ensemble" and config.instance_group:
        problems.append("an ensemble has no instance_group")
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    return config


def check_repository(repo: str | Path) -> dict:
    """Parse every ``<model>/config.pbtxt`` of ``repo``; model name -> ``ModelConfig``.

    Also what Triton checks across models when it loads the repository: the name in a config is
    its folder's name, every model has a version folder, and every model an ensemble step calls
    is in the repository.
    """
    repo = Path(repo)
    configs = {}
    for file in sorted(repo.glob("*/config.pbtxt")):
        config = parse_model_config(file.read_text(), str(file))
        if config.name != file.parent.name:
            raise ConfigError(f"{file}: name {config.name!r} differs from its folder {file.parent.name!r}")
        if not any(child.is_dir() and child.name.isdigit() for child in file.parent.iterdir()):
            raise ConfigError(f"{file.parent}: no numbered version folder")
        configs[config.name] = config
    if not configs:
        raise ConfigError(f"{repo}: no <model>/config.pbtxt")
    for config in configs.values():
        for step in config.ensemble_scheduling.step:
            if step.model_name not in configs:
                raise ConfigError(f"{repo / config.name / 'config.pbtxt'}: ensemble step {step.model_name!r} "
                                  "is not in the repository")
    return configs
