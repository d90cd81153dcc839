"""How a caption becomes RFNet's text input: one rule for the pipeline's judge, the rfad_judge
ensemble's prepare step and RFFT. Free of torch, so the ensemble's python step does not load it."""

from __future__ import annotations

import json
from pathlib import Path


def tokenize_caption(tokenizer, caption: str, return_tensors: str = "pt"):
    """caption -> (input_ids int64 [1, L], attention_mask int64 [1, L]), padded and truncated to the
    tokenizer's length; torch tensors (``"pt"``) or numpy arrays (``"np"``). ``tokenizer``: the
    transformers tokenizer saved with the judge, or a :class:`CaptionTokenizer` read from its folder."""
    if isinstance(tokenizer, CaptionTokenizer):
        ids, mask = tokenizer.encode(caption)
        if return_tensors == "pt":
            import torch

            return torch.from_numpy(ids), torch.from_numpy(mask)
        return ids, mask
    batch = tokenizer([caption], padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                      return_tensors=return_tensors)
    return batch["input_ids"], batch["attention_mask"]


class CaptionTokenizer:
    """A saved fast tokenizer (``tokenizer.json`` + ``tokenizer_config.json``) read with the tokenizers
    library alone, padding and truncating as :func:`tokenize_caption` asks transformers to.

    The rfad_judge ensemble's python step loads this rather than transformers' AutoTokenizer:
    transformers imports torch, and that import was a third of a CPU server's start (3.9 of 11
    CPU-seconds) and ~200 MB of the step's resident memory, for a step that only tokenises.
    ``tests/test_pipeline_io.py`` holds it equal to the transformers tokenizer it was saved from.
    """

    def __init__(self, folder: str | Path):
        from tokenizers import Tokenizer

        folder = Path(folder)
        if not (folder / "tokenizer.json").is_file():
            raise FileNotFoundError(f"{folder}: no tokenizer.json (save the caption tokenizer as a fast tokenizer)")
        config = json.loads((folder / "tokenizer_config.json").read_text())
        self.model_max_length = int(config["model_max_length"])
        self.backend_tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        pad_token = config["pad_token"]
        pad_token = pad_token["content"] if isinstance(pad_token, dict) else pad_token
        # Truncation counts the special tokens the post-processor adds, as transformers' does.
        self.backend_tokenizer.enable_truncation(max_length=self.model_max_length)
        self.backend_tokenizer.enable_padding(length=self.model_max_length, pad_token=pad_token,
                                              pad_id=self.backend_tokenizer.token_to_id(pad_token))

    def encode(self, caption: str):
        """caption -> (input_ids int64 [1, L], attention_mask int64 [1, L]) as numpy arrays."""
        import numpy as np

        encoding = self.backend_tokenizer.encode(caption)
        return (np.asarray([encoding.ids], dtype=np.int64), np.asarray([encoding.attention_mask], dtype=np.int64))


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
