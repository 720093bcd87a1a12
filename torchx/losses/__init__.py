"""Losses: called as `loss(output, target)`, return a scalar tensor; built from `loss_spec`.

    import torchx.losses as losses
    @losses.register('my_loss')
    class My...: ...
    obj = losses.make({'name': 'my_loss', 'args': {...}})
"""

from torchx.registry import Registry

registry = Registry("loss")
register = registry.register
make = registry.make

from torchx.losses import builtin  # noqa: E402,F401  (built-ins register themselves)
