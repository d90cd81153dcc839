"""The GPU check's parts (benchmarks/gpu_check.py imports them by path; report.py renders its docs section)."""
