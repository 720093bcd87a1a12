"""Callbacks: pl.Callback classes built from the `callbacks:` list.

    import torchx.callbacks as callbacks
    @callbacks.register('my_callback')
    class My...: ...
    obj = callbacks.make({'name': 'my_callback', 'args': {...}})
"""

from torchx.registry import Registry

registry = Registry("callback")
register = registry.register
make = registry.make

from torchx.callbacks import base_logger, lightning  # noqa: E402,F401  (built-ins register themselves)
