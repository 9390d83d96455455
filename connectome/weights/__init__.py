"""Published pruned weights: a registry of records (torchvision's url, transforms, meta), hash-checked
downloads, publishing from a run folder, and loading a published model.

The registry (weights/registry.json) holds one entry per checkpoint, named timm-style `arch.tag`;
its files are named `name-<first 8 hex of sha256>.safetensors`, the convention torch.hub checks.
"""

from connectome.weights.download import cache_dir, pull
from connectome.weights.load import load
from connectome.weights.publish import publish
from connectome.weights.registry import REGISTRY, Weights, get_entry, read_registry, resolve, summary

__all__ = ["REGISTRY", "Weights", "cache_dir", "get_entry", "load", "publish", "pull", "read_registry", "resolve",
           "summary"]
