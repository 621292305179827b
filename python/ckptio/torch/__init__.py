"""ckptio for PyTorch.

- :class:`CheckpointIO`: save and resume training (model, EMA, optimizer, LR scheduler, sampler,
  counters) as crash-safe checkpoint folders, synchronously or in the background; the same files
  as the C++ ``ckptio::CheckpointIO``, so a run resumes in libtorch or Python alike.
- :func:`load_checkpoint`: weights from any source ckptio reads into a module.
- :func:`torch_load`: ``torch.load(weights_only=True)`` without running code from the file.
- :func:`save_sharded`: the ``save_pretrained`` folder layout.
"""

from __future__ import annotations

from ckptio.torch._checkpoint_io import CheckpointIO
from ckptio.torch._weights import load_checkpoint, save_sharded, torch_load

__all__ = ["CheckpointIO", "load_checkpoint", "save_sharded", "torch_load"]
