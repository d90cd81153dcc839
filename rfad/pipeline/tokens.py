"""How prompts and captions become token ids: one rule for the loop's CLIP prompts and RFNet's
captions, in every runner, the rfad_judge ensemble's prepare step and RFFT. Free of torch and
transformers, so the served python models load neither for it."""

from __future__ import annotations

import json
from pathlib import Path


def tokenize(tokenizer, texts: list[str], return_tensors: str = "pt"):
    """texts -> (input_ids int64 [N, L], attention_mask int64 [N, L]), padded and truncated to the
    tokenizer's length L (``model_max_length``: 77 for SD-1.5's CLIP); torch tensors (``"pt"``) or
    numpy arrays (``"np"``). ``tokenizer``: a transformers tokenizer (the torch runner's, loaded
    with the models) or a :class:`SavedTokenizer` read from an export's folder."""
    if isinstance(tokenizer, SavedTokenizer):
        ids, mask = tokenizer.encode(texts)
        if return_tensors == "pt":
            import torch

            return torch.from_numpy(ids), torch.from_numpy(mask)
        return ids, mask
    batch = tokenizer(list(texts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                      return_tensors=return_tensors)
    return batch["input_ids"], batch["attention_mask"]


def tokenize_caption(tokenizer, caption: str, return_tensors: str = "pt"):
    """caption -> (input_ids int64 [1, L], attention_mask int64 [1, L]): RFNet's text input."""
    return tokenize(tokenizer, [caption], return_tensors)


class SavedTokenizer:
    """A saved fast tokenizer (``tokenizer.json`` + ``tokenizer_config.json``, as transformers 5
    saves CLIP's and RoBERTa's) read with the tokenizers library alone, padding and truncating as
    :func:`tokenize` asks transformers to.

    The runners built from an export (onnxruntime, the served pipeline) and the rfad_judge
    ensemble's python step load this rather than transformers' tokenizers: transformers imports
    torch, and in the judge step that import was a third of a CPU server's start (3.9 of 11
    CPU-seconds) and ~200 MB of its resident memory; in the pipeline step, which runs torch
    anyway, transformers itself was 1.4 CPU-seconds of each start. ``tests/test_pipeline_io.py``
    holds it equal to the transformers tokenizers it was saved from, CLIP's and RoBERTa's.
    """

    def __init__(self, folder: str | Path):
        from tokenizers import Tokenizer

        folder = Path(folder)
        if not (folder / "tokenizer.json").is_file():
            raise FileNotFoundError(f"{folder}: no tokenizer.json (save the tokenizer as a fast tokenizer: "
                                    "transformers >= 5 does; re-run rfad-export onnx)")
        config = json.loads((folder / "tokenizer_config.json").read_text())
        self.model_max_length = int(config["model_max_length"])
        self.backend_tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        pad_token = config["pad_token"]
        pad_token = pad_token["content"] if isinstance(pad_token, dict) else pad_token
        # Truncation counts the special tokens the post-processor adds, as transformers' does.
        self.backend_tokenizer.enable_truncation(max_length=self.model_max_length,
                                                 direction=config.get("truncation_side", "right"))
        self.backend_tokenizer.enable_padding(length=self.model_max_length, pad_token=pad_token,
                                              pad_id=self.backend_tokenizer.token_to_id(pad_token),
                                              direction=config.get("padding_side", "right"))

    def encode(self, texts: list[str]):
        """texts -> (input_ids int64 [N, L], attention_mask int64 [N, L]) as numpy arrays."""
        import numpy as np

        encodings = self.backend_tokenizer.encode_batch(list(texts))
        return (np.asarray([e.ids for e in encodings], dtype=np.int64),
                np.asarray([e.attention_mask for e in encodings], dtype=np.int64))


# Words a served tokenizer remembers the BPE split of. The tokenizers library caches every word it
# has split, up to 10,000 per tokenizer: a server whose prompts and captions carry product codes
# (a new word in nearly every request) fills that cache over days, about 2.5 MB per tokenizer,
# and the soak (benchmarks/suite/soak.py) measured it as part of the stubs' slope. 1,000 keeps the
# common words cached and bounds the cache at a tenth of that; splitting a short prompt's
# uncached words costs microseconds.
SERVED_BPE_CACHE_WORDS = 1000


def bound_bpe_cache(tokenizer, words: int = SERVED_BPE_CACHE_WORDS):
    """Cap the BPE word cache of a fast tokenizer (one of the tokenizers library's BPE models) at
    ``words``; other tokenizers are returned unchanged. Returns ``tokenizer``."""
    model = getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)
    if model is not None and hasattr(model, "_resize_cache"):
        model._resize_cache(words)
    return tokenizer
