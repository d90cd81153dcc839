"""The soak's request mix: valid generations and judge requests, and ten kinds of invalid request.

Two image regimes:

- ``fixed``: one 128-px product and two ad images of the shape's canvas size, reused (the
  suite's short soak);
- ``mixed``: every request draws its own sizes, as production traffic does: judge requests of 1-4
  ad images whose long side is log-uniform over the judge endpoint's 16-4096 px range, in one of
  eight aspect ratios (1:1 to 2:1 and 1:2, 16:9, 9:16), PNG up to 1 megapixel and JPEG above;
  product cut-outs of 32-2048 px a side in three kinds; prompts and captions with a product code
  (a word the tokenizers have not seen before) in every request.
"""

from __future__ import annotations

import io
import math
import random

import numpy as np

VALID = ("generate", "judge")
INVALID = ("not_an_image", "no_alpha", "steps_out_of_range", "nan_guidance", "empty_prompt", "long_prompt",
           "invalid_utf8", "steps_wrong_dtype", "missing_prompt", "judge_broken_image")
ASPECTS = (1.0, 4 / 3, 3 / 4, 3 / 2, 16 / 9, 9 / 16, 2.0, 0.5)
JUDGE_SIDES = (16, 4096)  # the judge endpoint's range (CanvasSpec.min_side, sqrt of max_pixels)
PRODUCT_SIDES = (32, 2048)
JUDGE_IMAGES_PER_REQUEST = (1, 4)  # ads per judge request in mixed mode
WORDS = ("bottle", "mug", "box", "on", "a", "marble", "table", "wooden", "shelf", "studio", "light", "kitchen",
         "garden", "sunny", "beach", "minimal", "red", "blue", "green", "premium", "gift", "soft", "shadow")


def _encode(array: np.ndarray) -> bytes:
    """PNG up to a megapixel, JPEG above (a 4096-px noisy PNG would pass the 20 MB request limit)."""
    from PIL import Image

    buffer = io.BytesIO()
    image = Image.fromarray(array)
    if array.shape[0] * array.shape[1] <= 2**20:
        image.save(buffer, format="PNG", compress_level=1)
    else:
        image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def draw_size(rng: random.Random, low: int, high: int) -> tuple[int, int]:
    """(width, height): long side log-uniform over [low, high], an aspect ratio of :data:`ASPECTS`."""
    aspect = rng.choice(ASPECTS)
    long_side = int(round(math.exp(rng.uniform(math.log(low), math.log(high)))))
    short_side = max(low, int(round(long_side / max(aspect, 1 / aspect))))
    return (long_side, short_side) if aspect >= 1 else (short_side, long_side)


def ad_image(rng: random.Random, width: int, height: int) -> bytes:
    """An ad-like image: a smooth random colour field with a little noise."""
    from PIL import Image

    generator = np.random.default_rng(rng.randrange(2**32))
    base = Image.fromarray(generator.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    field = np.asarray(base.resize((width, height), Image.Resampling.BILINEAR), dtype=np.int16)
    noise = generator.integers(-12, 13, (height, width, 1), dtype=np.int16)
    return _encode(np.clip(field + noise, 0, 255).astype(np.uint8))


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class RequestMix:
    """Builds and sends one request of a kind; returns its outcome: "ok" or the gRPC status name."""

    def __init__(self, size: int, mixed: bool = False):
        from PIL import Image

        from rfad.tiny.products import draw_product

        self.mixed = mixed
        self.product = _png(draw_product("bottle"))
        self.rgb = _png(Image.fromarray(np.full((64, 64, 3), 200, np.uint8)))
        rng = np.random.default_rng(0)
        self.ads = [_png(Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))) for _ in range(2)]

    # What each valid request carries ----------------------------------------------------------
    def judge_images(self, rng: random.Random) -> list[bytes]:
        if not self.mixed:
            return self.ads
        width, height = draw_size(rng, *JUDGE_SIDES)
        return [ad_image(rng, width, height) for _ in range(rng.randint(*JUDGE_IMAGES_PER_REQUEST))]

    def product_image(self, rng: random.Random) -> bytes:
        from rfad.tiny.products import SAMPLE_PRODUCTS, draw_product

        if not self.mixed:
            return self.product
        width, height = draw_size(rng, *PRODUCT_SIDES)
        return _png(draw_product(rng.choice(sorted(SAMPLE_PRODUCTS)), width, height, seed=rng.randrange(1000)))

    def text(self, rng: random.Random, fixed: str) -> str:
        if not self.mixed:
            return fixed
        code = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(rng.randint(4, 9)))
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 10))) + f" {code}"

    def largest(self, url: str, concurrency: int) -> None:
        """The largest requests, first alone, then from ``concurrency`` clients at once.

        Alone: the judge at its largest batch and, in mixed mode, its largest images (16 ads at
        4096 x 4096, a 2048-px product): its models have one instance each. Then every client
        sends the largest generation (the largest product, the most candidates and images) and
        the largest judge request of the mix (:data:`JUDGE_IMAGES_PER_REQUEST` ads at the
        largest size) at the same time, so that EVERY ``rfad_pipeline`` instance serves one
        (each instance's python-backend shared-memory region grows to what the largest request
        needs) and the server holds as many of the largest requests in flight as the soak can
        send. The memory measured afterwards is the soak's own growth, not first use.
        """
        from concurrent.futures import ThreadPoolExecutor

        from rfad.client import RfadClient
        from rfad.contract import JUDGE_MAX_IMAGES
        from rfad.tiny.products import draw_product

        rng = random.Random(0)
        images = [ad_image(rng, JUDGE_SIDES[1], JUDGE_SIDES[1])] if self.mixed else [self.ads[0]]
        product = _png(draw_product("box", PRODUCT_SIDES[1], PRODUCT_SIDES[1])) if self.mixed else self.product
        with RfadClient(url, retries=0) as client:
            client.judge(images * JUDGE_MAX_IMAGES, product, deadline_s=600)

        def largest_of_the_mix(_) -> None:
            with RfadClient(url, retries=0) as client:
                client.generate(product, "an ad", steps=1, candidates=8, num_images=8, max_attempts=1, deadline_s=600)
                client.judge(images * (JUDGE_IMAGES_PER_REQUEST[1] if self.mixed else 1), product, deadline_s=600)

        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(largest_of_the_mix, range(concurrency)))

    # Sending --------------------------------------------------------------------------------------
    def _raw(self, client, model: str, tensors: dict) -> str:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        inputs = []
        for name, (datatype, array) in tensors.items():
            tensor = grpcclient.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        try:
            client.infer(model, inputs, client_timeout=120)
        except InferenceServerException as exc:
            return str(exc.status() or "ERROR").removeprefix("StatusCode.")
        return "ok"

    def send(self, kind: str, rng: random.Random, clients: dict) -> str:
        from rfad.client import RfadClientError

        try:
            if kind == "generate":
                clients["rfad"].generate(self.product_image(rng), self.text(rng, "a bottle on a marble table"),
                                         caption=self.text(rng, ""), seed=rng.randrange(10**6),
                                         steps=rng.choice((1, 2)), candidates=rng.choice((1, 2)), max_attempts=1,
                                         deadline_s=300)
                return "ok"
            if kind == "judge":
                clients["rfad"].judge(self.judge_images(rng), self.product_image(rng),
                                      caption=self.text(rng, "bottle"), deadline_s=300)
                return "ok"
        except RfadClientError as exc:
            return exc.status or type(exc).__name__
        obj = lambda *values: ("BYTES", np.array(list(values), dtype=np.object_))  # noqa: E731
        base = {"product_image": obj(self.product), "prompt": obj(b"an ad")}
        tensors, model = dict(base), "rfad_pipeline"
        if kind == "not_an_image":
            tensors["product_image"] = obj(bytes(rng.randrange(256) for _ in range(200)))
        elif kind == "no_alpha":
            tensors["product_image"] = obj(self.rgb)
        elif kind == "steps_out_of_range":
            tensors["steps"] = ("INT32", np.array([rng.choice((0, 151, -5, 10**6))], np.int32))
        elif kind == "nan_guidance":
            tensors["guidance_scale"] = ("FP32", np.array([rng.choice((np.nan, np.inf, -1.0))], np.float32))
        elif kind == "empty_prompt":
            tensors["prompt"] = obj(b"   ")
        elif kind == "long_prompt":
            tensors["prompt"] = obj(b"x" * 3000)
        elif kind == "invalid_utf8":
            tensors["prompt"] = obj(b"\xff\xfe\xfa bad")
        elif kind == "steps_wrong_dtype":
            tensors["steps"] = ("FP32", np.array([4.0], np.float32))
        elif kind == "missing_prompt":
            del tensors["prompt"]
        elif kind == "judge_broken_image":
            model = "rfad_judge"
            tensors = {"generated_image": obj(self.ads[0], b"\x89PNG broken"), "product_image": obj(self.product)}
        else:
            raise ValueError(f"unknown request kind {kind!r}")
        return self._raw(clients["raw"], model, tensors)
