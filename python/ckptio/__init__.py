"""ckptio: save and load the checkpoints and weights of large neural networks.

- :mod:`ckptio.safetensors`: a drop-in for the ``safetensors`` package.
- :mod:`ckptio.torch`: save and resume PyTorch training (``CheckpointIO``), load weights from any
  source, read ``.pt`` files without running code.
- :mod:`ckptio.dist`: distributed checkpoints of ``torch.distributed`` jobs (DTensors, ZeRO
  partitions), loaded on any number of ranks; :mod:`ckptio.opensora`: Open-Sora's checkpoint
  functions on them.
- :mod:`ckptio.errors`: the exceptions, one class per error code.
"""

from __future__ import annotations

from ckptio.errors import Error

__version__ = "0.1.0"
__all__ = ["Error", "__version__"]
