"""Data modules: pl.LightningDataModule classes built from `data_module`.

    import torchx.datasets as datasets
    @datasets.register('my_dataset')
    class My...: ...
    obj = datasets.make({'name': 'my_dataset', 'args': {...}})
"""

from torchx.registry import Registry

registry = Registry("dataset")
register = registry.register
make = registry.make

# the built-ins register themselves
from torchx.datasets import cifar, cluttered, digits, fashion_mnist, folder, mnist, pairs, synthetic  # noqa: E402,F401
