"""How a caption becomes RFNet's text input: one rule for the pipeline's judge, the rfad_judge
ensemble's prepare step and RFFT. Free of torch, so the ensemble's python step does not load it."""

from __future__ import annotations


def tokenize_caption(tokenizer, caption: str, return_tensors: str = "pt"):
    """caption -> (input_ids int64 [1, L], attention_mask int64 [1, L]), padded and truncated to the
    tokenizer's length; torch tensors (``"pt"``) or numpy arrays (``"np"``)."""
    batch = tokenizer([caption], padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                      return_tensors=return_tensors)
    return batch["input_ids"], batch["attention_mask"]


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
