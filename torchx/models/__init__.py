"""Models: nn.Module classes or factories, built from `model_spec`. Input batch in, output out.

    import torchx.models as models
    @models.register('my_model')
    class My...: ...
    obj = models.make({'name': 'my_model', 'args': {...}})
"""

from torchx.registry import Registry

registry = Registry("model")
register = registry.register
make = registry.make

from torchx.models import cnn, dcgan, mlp, resnet  # noqa: E402,F401  (built-ins register themselves)
