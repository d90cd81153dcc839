"""The method, measured in the miniature world: ``python -m benchmarks.studies.method.method_bench``
(its parts: data, pretraining, the learning curve, the judges, the loop read off per-image records); docs/method.md."""
