"""The oracle where it is used (rfad.trainer.data.oracle_generated and its study): drawn scenes made
generated-looking by the shipped generator's VAE, labelled, counted per class; parts of several
generators kept apart in the results."""

from __future__ import annotations

import numpy as np
import pytest

from rfad.contract import CLASS_NAMES


def test_the_vae_construction_labels_every_scene_of_a_set_and_the_sets_are_disjoint():
    from rfad.trainer.api import Construction, load_generator, measure_generated_agreement
    from rfad.trainer.data.oracle_generated import check_scenes

    runner, _ = load_generator(None)
    agreement = measure_generated_agreement(runner, Construction("vae"), 2, "val")
    assert agreement.confusion.shape == (5, 5) and agreement.confusion.sum(1).tolist() == [2] * 5
    assert agreement.source == "vae, val"
    assert sum(n for n, _ in agreement.variants.values()) == 10
    val, report = check_scenes("Available", 3, "val"), check_scenes("Available", 3, "report")
    assert not any(np.array_equal(a.image, b.image) for a in val for b in report)
    with pytest.raises(ValueError, match="strength: must be in"):
        Construction("repainted", 1.5)
    with pytest.raises(ValueError, match="unknown 'blur'"):
        Construction("blur")


def test_results_keep_each_generators_rows_and_drop_stale_rules():
    from benchmarks.studies.miniworld.oracle_generated import merged_rows, rules_fingerprint
    from benchmarks.studies.miniworld.report import generated_agreement_section

    def row(sha, set_="report", rules=None, share=0.5):
        per_class = {name: share for name in CLASS_NAMES}
        return {"construction": "vae", "set": set_, "rules": rules or rules_fingerprint(), "n_per_class": 4,
                "generator": {"factor": 4 if sha == "b" * 64 else 8, "vae_sha256": sha}, "per_class": per_class,
                "intervals": {name: (0.2, 0.8) for name in CLASS_NAMES}, "seconds": 1.0, "measured": "2026-12-07",
                "variants": {}, "description": "d"}

    old_f8, stale = row("a" * 64, share=0.4), row("c" * 64, rules=[["other"]])
    new_f8, new_f4 = row("a" * 64, share=0.6), row("b" * 64)
    rows = merged_rows([new_f8, new_f4], [old_f8, stale, row("a" * 64, set_="val")])
    assert [(r["generator"]["vae_sha256"][0], r["set"]) for r in rows] == [("a", "report"), ("a", "val"), ("b", "report")]
    assert rows[0]["per_class"]["Available"] == 0.6  # the new part replaces the old one of its key
    text = generated_agreement_section({"machine": {"date": "2026-12-07", "cpu_count": 2, "processor": "x86_64",
                                                    "torch": "t"}, "settings": {}, "rows": rows})
    assert "| factor 4 (bbbbbbbb) | vae | report | 4 | 2026-12-07 | 50.0 % (20-80)" in text
