"""How a caption becomes RFNet's text input: one rule for the pipeline's judge, the rfad_judge
ensemble's prepare step and RFFT. Free of torch, so the ensemble's python step does not load it."""

from __future__ import annotations


def tokenize_caption(tokenizer, caption: str, return_tensors: str = "pt"):
    """caption -> (input_ids int64 [1, L], attention_mask int64 [1, L]), padded and truncated to the
    tokenizer's length; torch tensors (``"pt"``) or numpy arrays (``"np"``)."""
    batch = tokenizer([caption], padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                      return_tensors=return_tensors)
    return batch["input_ids"], batch["attention_mask"]
