"""What the GPU check runs: its parts, and the sizes of each part at the two shapes.

``FULL`` is the paper's and production's setting on the SD-1.5 twin (``rfad tiny --shape sd15``):
512 px, 40 DDIM steps, CFG 7.5, K = 1 and 4 candidates; RFFT at local batch 4 with gradient
accumulation 4, bf16 autocast and gradient checkpointing; RFNet (ResNet-50 + RoBERTa-base, 384 px)
trained in bf16; the judge at batch 1 and 16. ``TINY`` is the same run on the tiny zoo, small
enough for two CPU cores in the test suite (its numbers mean nothing; it keeps the code alive).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# In run order: the twin first (every part reads it), the eager generation and its diffusers
# ratio (the headline figure) next, torch.compile last (the longest and least certain).
PARTS = ("twin", "generation", "judge", "rfft", "rfnet", "compile")
PART_HELP = {
    "twin": "build the random-weight zoo at the plan's shape (rfad tiny --shape sd15), or reuse --work's",
    "generation": "one attempt of the torch runner at each K beside diffusers' ControlNet inpaint pipeline",
    "judge": "RunnerJudge latency (depth + saliency + RFNet) at each judge batch",
    "rfft": "one RFFT optimiser step (trainer functions, bf16 autocast on a GPU, gradient checkpointing)",
    "rfnet": "RFNet training steps (bf16 autocast on a GPU): samples per second",
    "compile": "the torch runner with torch.compile (--compile-mode) at K = 1",
}


@dataclass(frozen=True)
class CheckPlan:
    """Sizes of every part (see the module docstring)."""

    shape: str  # rfad.tiny.shapes.SHAPES key of the zoo
    size: int  # canvas side, px
    steps: int  # DDIM steps of one attempt
    guidance: float
    controlnet_scale: float
    candidates: tuple[int, ...]  # K per attempt
    attempt_repeats: int  # timed attempts per backend and K (after one warm-up)
    step_calls: int  # timed ControlNet + UNet evaluations per K (after one warm-up)
    compile_candidates: tuple[int, ...]
    judge_batches: tuple[int, ...]
    judge_repeats: int  # timed calls per batch (after judge_warmup)
    judge_warmup: int
    rfft_size: int
    rfft_batch: int  # local batch (rows per micro-step)
    rfft_accum: int  # micro-steps per optimiser step
    rfft_ddim_steps: int
    rfft_last_k: int
    rfft_rows: int  # synthetic products the RFFT micro-steps draw from
    rfnet_batches: tuple[int, ...]
    rfnet_steps: int  # timed training steps per batch (after rfnet_warmup)
    rfnet_warmup: int

    def to_dict(self) -> dict:
        return asdict(self)


FULL = CheckPlan(shape="sd15", size=512, steps=40, guidance=7.5, controlnet_scale=1.0, candidates=(1, 4),
                 attempt_repeats=2, step_calls=10, compile_candidates=(1,), judge_batches=(1, 16), judge_repeats=10,
                 judge_warmup=2, rfft_size=512, rfft_batch=4, rfft_accum=4, rfft_ddim_steps=40, rfft_last_k=10,
                 rfft_rows=16, rfnet_batches=(16, 64), rfnet_steps=10, rfnet_warmup=3)

TINY = CheckPlan(shape="tiny", size=64, steps=2, guidance=7.5, controlnet_scale=1.0, candidates=(1, 2),
                 attempt_repeats=1, step_calls=1, compile_candidates=(1,), judge_batches=(1, 2), judge_repeats=1,
                 judge_warmup=1, rfft_size=64, rfft_batch=1, rfft_accum=2, rfft_ddim_steps=3, rfft_last_k=2,
                 rfft_rows=2, rfnet_batches=(2,), rfnet_steps=1, rfnet_warmup=1)
