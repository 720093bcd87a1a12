"""torchx: config-driven PyTorch experiments on PyTorch Lightning.

Kept light on purpose: `import torchx` loads nothing heavy. The registries live in
`torchx.models`, `torchx.losses`, `torchx.datasets`, `torchx.wrappers`, `torchx.callbacks`
and `torchx.optim`.
"""

__version__ = "0.1.0"
