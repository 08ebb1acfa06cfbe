"""regtopk: communication-efficient distributed training with RegTop-k.

regtopk.torch.DistributedOptimizer trains a PyTorch model in a regtopk job: the same C++
sparsifier, codec, optimizer and gRPC client as the C++ worker (regtopk._core), driven from a
PyTorch training loop.
"""
from regtopk._core import digest_floats, digest_bytes  # noqa: F401

__all__ = ["digest_floats", "digest_bytes"]
