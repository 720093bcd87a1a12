"""Models: nn.Module classes or factories, built from `model_spec`. Input batch in, output out.

    import torchx.models as models
    @models.register('my_model')
    class My...: ...
    obj = models.make({'name': 'my_model', 'args': {...}})

A name that is not registered is looked up in torchvision's and timm's model zoos (zoo.py):
`{name: resnet50, args: {weights: DEFAULT}}`, `{name: timm:convnext_atto, args: {pretrained: true}}`.
"""

from torchx.models import zoo
from torchx.registry import Registry

# registered names first; the zoos only for the rest (keys() stays the registered names: listing and
# the every-model tests must not walk thousands of zoo entries)
registry = Registry("model", fallback=lambda name: zoo.find(name, registry.keys()))
register = registry.register
make = registry.make

from torchx.models import cnn, dcgan, edsr, mlp, resnet  # noqa: E402,F401  (built-ins register themselves)
