"""Early screening, measured: ``python -m benchmarks.studies.screening.screening_bench`` (issue 28); docs/performance.md."""
