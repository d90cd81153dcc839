"""Serving: the Triton launcher (rfad-serve) and the request/response mapping of rfad_pipeline."""
