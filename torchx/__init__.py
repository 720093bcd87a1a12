"""torchx: config-driven PyTorch experiments on PyTorch Lightning.

Kept light on purpose: `import torchx` loads nothing heavy. The registries live in
`torchx.models`, `torchx.losses`, `torchx.datasets`, `torchx.wrappers`, `torchx.callbacks`
and `torchx.optim`; `torchx.load_run` and `torchx.load_model` (torchx.tools.api) are imported
when first used.
"""

from typing import Any

__version__ = "0.1.0"

__all__ = ["load_model", "load_run"]


def __getattr__(name: str) -> Any:
    if name in ("load_run", "load_model"):
        from torchx.tools import api

        return getattr(api, name)
    raise AttributeError(f"module 'torchx' has no attribute {name!r}")
