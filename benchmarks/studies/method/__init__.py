"""The method, measured in the miniature world: ``python -m benchmarks.studies.method.method_bench``
(its parts, the judge's placement study in :mod:`.judge_placement`); docs/method.md."""
