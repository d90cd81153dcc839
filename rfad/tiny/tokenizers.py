"""Offline tokenizers for the tiny model zoo.

There is no model hub at test or demo time, so the zoo builds its tokenizers in code: a CLIP
BPE tokenizer (byte-level alphabet with CLIP's ``</w>`` end-of-word convention) and a
byte-level RoBERTa tokenizer trained with the ``tokenizers`` library. Both are real
transformers tokenizers; they are saved with ``save_pretrained`` and loaded back by the same
code that loads real model folders.

Merges are learned from a small built-in corpus of ad prompts and product titles, so typical
words become few tokens and prompts of realistic length fit the 77-token CLIP window.
"""

from __future__ import annotations

from collections import Counter

from transformers import CLIPTokenizer, RobertaTokenizer

# Words that ad prompts and product titles are made of; the merges are learned from them.
AD_CORPUS = (
    "a bottle on a marble table, soft light, product photography, high quality",
    "a red ceramic mug on a wooden desk beside a window, morning light, bokeh",
    "a perfume bottle standing on a stone podium, water splashes, studio lighting",
    "a pair of running shoes on a city street at sunset, cinematic, detailed",
    "a black wireless headphone on a clean white background, minimal, elegant",
    "a skincare jar among green leaves and flowers, natural light, fresh",
    "a leather handbag on a velvet sofa in a luxury living room",
    "a smartphone on a glass table with reflections, modern office, blue tone",
    "a coffee machine in a bright kitchen, marble counter, plants",
    "a massage chair in a cosy living room, warm light, wooden floor",
    "stainless steel water bottle 500ml, ceramic mug 350ml, cotton t-shirt, wireless earbuds",
    "lipstick, face cream, sports watch, kids toy car, electric kettle, desk lamp",
    "lowres, blurry, bad quality, watermark, text, deformed, ugly",
)

CLIP_MAX_LENGTH = 77


def byte_alphabet() -> dict[int, str]:
    """Map each byte value to a printable unicode character (the byte-level BPE alphabet).

    Printable Latin-1 bytes map to themselves; the other 68 bytes are shifted past 255 so
    that every byte has a visible, non-whitespace symbol, which BPE vocabularies require.
    """
    printable = list(range(ord("!"), ord("~") + 1))
    printable += list(range(ord("\u00a1"), ord("\u00ac") + 1))
    printable += list(range(ord("\u00ae"), ord("\u00ff") + 1))
    table: dict[int, str] = {b: chr(b) for b in printable}
    shift = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shift)
            shift += 1
    return table


def _learn_clip_merges(corpus: tuple[str, ...], num_merges: int) -> list[tuple[str, str]]:
    """Greedy BPE over words split into byte symbols, last symbol carrying ``</w>`` (CLIP style)."""
    alphabet = byte_alphabet()
    words: Counter[tuple[str, ...]] = Counter()
    for line in corpus:
        for word in line.lower().replace(",", " ").split():
            symbols = [alphabet[b] for b in word.encode("utf-8")]
            symbols[-1] = symbols[-1] + "</w>"
            words[tuple(symbols)] += 1
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for symbols, count in words.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += count
        if not pairs:
            break
        # Ties broken by the pair itself so the vocabulary does not depend on dict order.
        best = max(pairs.items(), key=lambda item: (item[1], item[0]))[0]
        merges.append(best)
        merged: Counter[tuple[str, ...]] = Counter()
        for symbols, count in words.items():
            out: list[str] = []
            i = 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    return merges


def build_clip_tokenizer(num_merges: int = 600) -> CLIPTokenizer:
    """A CLIP tokenizer with a byte-level vocabulary (about 512 + ``num_merges`` + 2 tokens).

    ``model_max_length`` is 77 like SD-1.5's, so prompt padding and truncation behave as with
    the real tokenizer.
    """
    alphabet = list(byte_alphabet().values())
    vocab: dict[str, int] = {}
    for symbol in alphabet + [s + "</w>" for s in alphabet]:
        vocab[symbol] = len(vocab)
    merges = _learn_clip_merges(AD_CORPUS, num_merges)
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges)
    tokenizer.model_max_length = CLIP_MAX_LENGTH
    return tokenizer


def build_roberta_tokenizer(vocab_size: int = 400, max_length: int = 64) -> RobertaTokenizer:
    """A byte-level BPE RoBERTa tokenizer trained on the built-in corpus (deterministic)."""
    from tokenizers import ByteLevelBPETokenizer

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(
        list(AD_CORPUS), vocab_size=vocab_size, min_frequency=1, special_tokens=specials, show_progress=False
    )
    model = trainer._tokenizer.model  # the trained BPE: vocab and ordered merges
    vocab = trainer.get_vocab()
    merges = _bpe_merges(model)
    tokenizer = RobertaTokenizer(vocab=vocab, merges=merges)
    tokenizer.model_max_length = max_length
    return tokenizer


def _bpe_merges(model) -> list[tuple[str, str]]:
    """Ordered merges of a trained ``tokenizers`` BPE model (read back from its merges.txt)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        merges_file = next(f for f in model.save(tmp) if f.endswith("merges.txt"))
        with open(merges_file, encoding="utf-8") as handle:
            lines = [line.rstrip("\n") for line in handle if line.strip() and not line.startswith("#version")]
    return [tuple(line.split(" ")) for line in lines]  # type: ignore[misc]
