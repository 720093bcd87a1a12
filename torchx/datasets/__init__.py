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

from torchx.datasets import cifar, digits, fashion_mnist, mnist, synthetic  # noqa: E402,F401  (built-ins register themselves)
