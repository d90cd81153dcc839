"""Deployment profiles (cpu, edge, datacenter) and the arithmetic they were sized with.

Torch-free: ``rfad-export`` (Triton configs, TensorRT engines, Kubernetes manifests) and the
docs read these declarations without loading a model.
"""
