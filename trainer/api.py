"""The trainer's public API: what the app layer (``rfad demo``) and the benchmarks use.

Everything else in :mod:`rfad.trainer` is internal to the stage: the import contracts in
pyproject.toml (checked by tests/test_layers.py) refuse an import of it from outside. A name
goes here when a caller outside the trainer needs it, and nowhere else.
"""

from __future__ import annotations

from rfad.trainer.checkpoints import latest_checkpoint
from rfad.trainer.data.manifest import resolve_path
from rfad.trainer.data.miniworld import MiniworldSettings, load_generator, product_requests, product_splits, write_miniworld_dataset
from rfad.trainer.data.oracle_check import ORACLE_CHECK_SOURCES, measure_agreement
from rfad.trainer.data.oracle_generated import Construction, measure_generated_agreement
from rfad.trainer.data.fidelity import read_fidelity
from rfad.trainer.data.prepare import prepare_maps
from rfad.trainer.data.scenes import draw_scene, write_scene_dataset
from rfad.trainer.data.synth import write_synthetic_dataset
from rfad.trainer.miniworld.ship_judge import ship_judge
from rfad.trainer.miniworld.vae import reconstruct
from rfad.trainer.rfft.config import WEIGHT_DTYPES, RFFTConfig
from rfad.trainer.rfft.losses import feedback_losses
from rfad.trainer.rfft.measures import cross_pair_distances, cross_product_distance, fidelity_shares, seed_distance
from rfad.trainer.rfft.micro_batch import prepare_micro_batch
from rfad.trainer.rfft.sampling import load_rows, micro_batch_rows, micro_step_randomness
from rfad.trainer.rfft.train import load_rfft_models, train_rfft
from rfad.trainer.rfnet.evaluate import average_precision, compute_metrics, evaluate_rfnet
from rfad.trainer.rfnet.train import TINY_LR, TRAIN_LOG, RFNetTrainConfig, epoch_order, load_split_rows, train_rfnet

__all__ = [
    # datasets: the manifest's paths, RF-mini, drawn scenes, the synthetic set, map caching, the oracle's check
    "resolve_path", "MiniworldSettings", "product_requests", "product_splits", "write_miniworld_dataset", "draw_scene",
    "write_scene_dataset", "write_synthetic_dataset", "prepare_maps", "ORACLE_CHECK_SOURCES", "measure_agreement",
    "load_generator", "Construction", "measure_generated_agreement",
    # RFNet: training, its split and epoch order, evaluation
    "TINY_LR", "TRAIN_LOG", "RFNetTrainConfig", "train_rfnet", "epoch_order", "load_split_rows", "compute_metrics", "average_precision",
    "evaluate_rfnet",
    # RFFT: training, and the pieces of one step (benchmarks/suite/rfft_step.py and benchmarks/gpu/
    # training_parts.py time them; the latter draws each micro-step's rows and randomness as training does)
    "RFFTConfig", "WEIGHT_DTYPES", "train_rfft", "latest_checkpoint", "load_rfft_models", "load_rows", "micro_batch_rows",
    "micro_step_randomness", "prepare_micro_batch", "feedback_losses",
    # what catches a tuned generator cheating: diversity across seeds and products, prompt fidelity
    "seed_distance", "cross_product_distance", "cross_pair_distances", "fidelity_shares", "read_fidelity",
    # the miniature world: its judge, shipped; a generator VAE's reconstructions (benchmarks/studies/method/judge_evidence.py)
    "ship_judge", "reconstruct",
]
