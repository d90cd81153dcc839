"""Served-request parsing and response building: every bad field is named (no server needed)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from rfad.contract import MAX_IMAGE_BYTES, PIPELINE_INPUTS, PIPELINE_OUTPUTS, InvalidRequest, Limits
from rfad.pipeline.generate import Candidate, GenerationResult
from rfad.serving.pipeline_io import build_pipeline_response, parse_pipeline_request


def _request(**overrides):
    inputs = {
        "product_image": np.array([b"\x89PNG fake bytes"], dtype=np.object_),
        "prompt": np.array(["a mug on a desk".encode()], dtype=np.object_),
        "steps": np.array([20], dtype=np.int32),
        "guidance_scale": np.array([6.0], dtype=np.float32),
        "seed": np.array([2**40], dtype=np.int64),
    }
    inputs.update(overrides)
    return {k: v for k, v in inputs.items() if v is not None}


def test_valid_request_with_defaults_for_absent_optionals():
    request = parse_pipeline_request(_request())
    assert request.prompt == "a mug on a desk" and request.negative_prompt == "" and request.caption == ""
    assert request.settings == {"seed": 2**40, "steps": 20, "guidance_scale": 6.0}
    assert isinstance(request.settings["steps"], int)


@pytest.mark.parametrize("overrides, field, words", [
    ({"product_image": None}, "product_image", "missing"),
    ({"prompt": None}, "prompt", "missing"),
    ({"prompt": np.array([b"   "], dtype=np.object_)}, "prompt", "empty"),
    ({"prompt": np.array([b"\xff\xfe"], dtype=np.object_)}, "prompt", "UTF-8"),
    ({"prompt": np.array([b"x" * 3000], dtype=np.object_)}, "prompt", "2000"),
    ({"prompt": np.array([b"a", b"b"], dtype=np.object_)}, "prompt", "exactly one"),
    ({"product_image": np.array([b""], dtype=np.object_)}, "product_image", "empty"),
    ({"product_image": np.array([b"x" * (MAX_IMAGE_BYTES + 1)], dtype=np.object_)}, "product_image", "limit"),
    ({"steps": np.array([0], dtype=np.int32)}, "steps", "[1, 150]"),
    ({"steps": np.array([500], dtype=np.int32)}, "steps", "[1, 150]"),
    ({"max_attempts": np.array([21], dtype=np.int32)}, "max_attempts", "[1, 20]"),
    ({"guidance_scale": np.array([np.nan], dtype=np.float32)}, "guidance_scale", "finite"),
    ({"seed": np.array([-5], dtype=np.int64)}, "seed", "range"),
    ({"threshold": np.array([1.5], dtype=np.float32)}, "threshold", "range"),
    ({"bogus": np.array([1])}, "bogus", "unknown"),
])
def test_bad_fields_are_named(overrides, field, words):
    with pytest.raises(InvalidRequest) as info:
        parse_pipeline_request(_request(**overrides))
    assert field in str(info.value) and words in str(info.value)


def test_server_limits_are_configurable():
    with pytest.raises(InvalidRequest, match=r"max_attempts.*\[1, 3\]"):
        parse_pipeline_request(_request(max_attempts=np.array([4], dtype=np.int32)), Limits(max_attempts=(1, 3)))


def test_response_tensors_follow_the_contract():
    image = np.zeros((16, 16, 3), np.uint8)
    judged = Candidate(seed=3, attempt=2, image=image, probabilities=np.array([0.7, 0.1, 0.1, 0.05, 0.05]),
                       available=True)
    unjudged = Candidate(seed=4, attempt=2, image=image + 9)
    outputs = build_pipeline_response(GenerationResult(images=[judged, unjudged], candidates=[judged, unjudged],
                                                       attempts=2))
    assert set(outputs) == {field.name for field in PIPELINE_OUTPUTS}
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(outputs["images"][1]))), image + 9)
    assert outputs["available"].tolist() == [True, False] and outputs["seeds"].tolist() == [3, 4]
    assert outputs["probabilities"].dtype == np.float32 and np.isnan(outputs["probabilities"][1]).all()
    assert outputs["attempts"].tolist() == [2]


def test_contract_names_are_unique_and_cover_settings():
    names = [field.name for field in PIPELINE_INPUTS]
    assert len(names) == len(set(names))
    from rfad.pipeline.settings import GenerationSettings

    settings = GenerationSettings(**parse_pipeline_request(_request()).settings)
    assert settings.steps == 20 and settings.seed == 2**40


@pytest.mark.parametrize("settings, seeds", [
    ({"candidates": np.array([2], dtype=np.int32), "max_attempts": np.array([2], dtype=np.int32)}, 4),
    ({}, 5),  # absent: GenerationSettings' defaults, 1 candidate x 5 attempts
    ({"candidates": np.array([8], dtype=np.int32), "num_images": np.array([8], dtype=np.int32),
      "max_attempts": np.array([1], dtype=np.int32)}, 8),
    ({"num_images": np.array([8], dtype=np.int32), "max_attempts": np.array([1], dtype=np.int32)}, 8),
])
def test_every_candidate_seed_must_fit_in_int64(settings, seeds):
    """What rfad_pipeline does with a request: parse it, then build its GenerationSettings."""
    from rfad.contract import MAX_SEED
    from rfad.pipeline.settings import GenerationSettings

    largest = MAX_SEED - seeds + 1
    parsed = parse_pipeline_request(_request(seed=np.array([largest], dtype=np.int64), **settings))
    assert GenerationSettings(**parsed.settings).seed == largest
    parsed = parse_pipeline_request(_request(seed=np.array([largest + 1], dtype=np.int64), **settings))
    with pytest.raises(InvalidRequest) as info:
        GenerationSettings(**parsed.settings)
    assert str(info.value).startswith("seed: ") and str(info.value).endswith(f"allowed for this request is {largest}")


@pytest.mark.parametrize("which", ["clip", "roberta"])
def test_a_bounded_bpe_cache_never_changes_the_tokens(which):
    """Served tokenizers keep at most SERVED_BPE_CACHE_WORDS split words (rfad.pipeline.tokens): the
    prompts' product codes would fill the cache without end. Past the bound, words are split afresh,
    to the same tokens."""
    import random
    import string

    from rfad.pipeline.tokens import bound_bpe_cache
    from rfad.tiny.tokenizers import build_clip_tokenizer, build_roberta_tokenizer

    build = build_clip_tokenizer if which == "clip" else build_roberta_tokenizer
    bounded, free = bound_bpe_cache(build(), words=3), build()
    rng = random.Random(0)
    for _ in range(50):
        code = "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(rng.randint(4, 9)))
        text = f"a red bottle on a marble table {code}"
        assert bounded(text)["input_ids"] == free(text)["input_ids"]


TEXTS = ["red mug", "", "Kaffeebecher für Büro – 350 ml", "sku XJ-2291b on a shelf", "A  Bottle,  ON a TABLE!!",
         " ".join(["a bottle on a marble table"] * 20)]  # the last is past both lengths: truncated, specials kept


@pytest.mark.parametrize("kind", ["clip", "roberta"])
def test_the_saved_tokenizer_equals_the_transformers_one_it_was_saved_from(kind, tmp_path):
    """The runners built from an export and rfad_judge_prepare tokenise with the tokenizers library
    alone (SavedTokenizer: no torch, no transformers); the ids and mask must be those of the
    transformers tokenizer the models were trained with (CLIP's for prompts, RoBERTa's for
    captions): short, empty, non-ASCII, mixed case, product codes, and texts past the length."""
    import subprocess
    import sys

    from transformers import AutoTokenizer

    from rfad.pipeline.tokens import SavedTokenizer, bound_bpe_cache, tokenize
    from rfad.tiny.tokenizers import build_clip_tokenizer, build_roberta_tokenizer

    length = 77 if kind == "clip" else 16
    (build_clip_tokenizer() if kind == "clip" else build_roberta_tokenizer(max_length=16)).save_pretrained(tmp_path)
    reference = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    ours = bound_bpe_cache(SavedTokenizer(tmp_path), words=3)
    assert ours.model_max_length == reference.model_max_length == length
    for text in TEXTS:
        ids, mask = tokenize(ours, [text], return_tensors="np")
        expected_ids, expected_mask = tokenize(reference, [text], return_tensors="np")
        assert ids.dtype == np.int64 and ids.shape == (1, length) and mask.shape == (1, length)
        assert ids.tolist() == expected_ids.tolist() and mask.tolist() == expected_mask.tolist(), text
    assert expected_ids[0, -1] == reference.eos_token_id  # the last text was truncated
    ids, mask = tokenize(ours, TEXTS[:2])  # a batch, as torch tensors: the loop's [negative, prompt]
    expected_ids, expected_mask = tokenize(reference, TEXTS[:2])
    assert ids.shape == (2, length) and ids.tolist() == expected_ids.tolist()
    assert mask.tolist() == expected_mask.tolist()
    # What a served step imports and does at start, in a fresh interpreter: torch and transformers stay out.
    probe = ("import sys; import rfad.contract, rfad.serving.judge_io, rfad.serving.responses; "
             "from rfad.pipeline.tokens import SavedTokenizer, bound_bpe_cache; "
             f"bound_bpe_cache(SavedTokenizer({str(tmp_path)!r})); "
             "print(sorted({'torch', 'transformers'} & set(sys.modules)))")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout == "[]\n"
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        SavedTokenizer(tmp_path)
