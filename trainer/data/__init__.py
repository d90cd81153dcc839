"""Datasets for the trainers: the manifest format, the synthetic set and the RF1M importer."""
