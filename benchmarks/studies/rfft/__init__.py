"""RFFT in miniature: ``python -m benchmarks.studies.rfft.rfft_study`` (settings swept and chosen on validation
products, reported on test with Recurrent Generation on top); docs/method.md."""
