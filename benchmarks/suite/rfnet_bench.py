"""RFNet judge cost on CPU: inference latency per image and training throughput.

Full shape = ResNet-50 + RoBERTa-base at 384 px (random weights; speed does not depend on
them); tiny = the test zoo's shape. Inference runs the ``rfnet`` graph (images + caption
embeddings) twice: eager PyTorch, and the same module exported by ``rfad-export``'s own
``export_component`` and run in ONNX Runtime (CPU provider). The caption graph ``rfnet_text``
runs once per request and is timed separately (eager).

    python -m benchmarks.suite.rfnet_bench [--quick]

Writes benchmarks/results/rfnet.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from benchmarks.common import markdown_table, time_runs, write_results

from rfad.models.rfnet import RFNet, RFNetConfig, tiny_rfnet_config


def inputs(config: RFNetConfig, batch: int, tokens: int = 32):
    size = config.image_size
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(batch, 3, size, size, generator=g) for _ in range(2)]
    maps = [torch.rand(batch, 1, size, size, generator=g) for _ in range(2)]
    ids = torch.randint(5, 300, (batch, tokens), generator=g)
    return images, maps, ids, torch.ones(batch, tokens, dtype=torch.long)


def onnx_session(model: RFNet, workdir: Path, tokens: int):
    """The ``rfnet`` graph of ``model`` exported as ``rfad-export onnx`` exports it, in an ORT session."""
    import onnxruntime

    from rfad.components.registry import component_specs
    from rfad.components.specs import ModelFacts
    from rfad.export.api import export_component
    from rfad.models.rfnet import RFNetJudge
    from rfad.onnx_session import open_session

    facts = ModelFacts(text_dim=32, rfnet_width=model.config.width, caption_tokens=tokens,
                       num_classes=model.config.num_classes, judge_size=model.config.image_size)
    spec = component_specs(facts)["rfnet"]
    path = workdir / "rfnet" / "model.onnx"
    export_component(RFNetJudge(model).eval(), spec, path, facts, opset=17, external_data_threshold=2**31, vocab=300)
    onnxruntime.set_default_logger_severity(3)
    return open_session(path, "fp32"), spec


def bench(shape: str, config: RFNetConfig, batches: list[int], repeats: int, train_batch: int,
          tokens: int = 32) -> list[dict]:
    torch.manual_seed(0)
    model = RFNet(config).eval()
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        session, spec = onnx_session(model, Path(workdir), tokens)
        for batch in batches:
            images, maps, ids, mask = inputs(config, batch, tokens)
            with torch.no_grad():
                caption = model.encode_caption(ids[:1], mask[:1]).expand(batch, -1, -1)
                eager = time_runs(lambda: model.judge(*images, *maps, caption, mask), repeats)
                text = time_runs(lambda: model.encode_caption(ids[:1], mask[:1]), repeats)
            feed = dict(zip(spec.input_names, (t.contiguous().numpy() for t in (*images, *maps, caption, mask)),
                            strict=True))
            ort = time_runs(lambda: session.run(None, feed), repeats)
            for backend, timing in (("torch eager", eager), ("onnxruntime", ort)):
                rows.append({"shape": shape, "mode": "inference", "backend": backend, "batch": batch,
                             "median_s": timing["median_s"], "per_image_s": timing["median_s"] / batch,
                             "min_s": timing["min_s"], "max_s": timing["max_s"], "caption_s": text["median_s"],
                             "repeats": repeats})
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images, maps, ids, mask = inputs(config, train_batch)
    labels = torch.arange(train_batch) % config.num_classes

    def step():
        loss = torch.nn.functional.cross_entropy(model(*images, *maps, ids, mask), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    timing = time_runs(step, max(1, repeats // 2))
    rows.append({"shape": shape, "mode": "training step", "backend": "torch eager", "batch": train_batch, "median_s": timing["median_s"],
                 "samples_per_s": train_batch / timing["median_s"], "min_s": timing["min_s"],
                 "max_s": timing["max_s"], "repeats": timing["repeats"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, batch 1 only at full shape")
    args = parser.parse_args()
    repeats = 2 if args.quick else 5
    rows = bench("tiny (64 px)", tiny_rfnet_config(), [1, 8], repeats * 2, train_batch=8)
    rows += bench("full (ResNet-50 + RoBERTa-base, 384 px)", RFNetConfig(), [1] if args.quick else [1, 8], repeats,
                  train_batch=2)
    path = write_results("rfnet", rows, {"repeats": repeats, "caption_tokens": 32, "device": "cpu"})
    print(markdown_table(rows, [("shape", "shape"), ("mode", "mode"), ("backend", "backend"), ("batch", "batch"), ("median_s", "median s"),
                                ("per_image_s", "s / image"), ("samples_per_s", "samples / s"),
                                ("caption_s", "caption s")]))
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
