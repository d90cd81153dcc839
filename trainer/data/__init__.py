"""Datasets for the trainers: the manifest format, the synthetic set, the RF1M importer, RF-mini scenes and oracle."""
