"""Training wrappers: pl.LightningModule classes built from `train_wrapper`.

    import torchx.wrappers as wrappers
    @wrappers.register('my_wrapper')
    class My...: ...
    obj = wrappers.make({'name': 'my_wrapper', 'args': {...}})
"""

from torchx.registry import Registry

registry = Registry("wrapper")
register = registry.register
make = registry.make

from torchx.wrappers import base, gan  # noqa: E402,F401  (built-ins register themselves)
