"""Metrics: torchmetrics classes by snake_case name (`accuracy`, `f1_score`, ...) unless a
registered entry shadows them; built from the top-level `metrics:` list.

    import torchx.metrics as metrics
    @metrics.register('my_metric')
    class MyMetric(torchmetrics.Metric): ...

A metric is called as `update(output, target)` on every val/test batch and `compute()` at
the end of the epoch; it is logged as `val/<name>` and `test/<name>`.
"""

from __future__ import annotations

import functools
import inspect
import re

from torchx.registry import Registry


@functools.cache
def _torchmetrics_classes() -> dict[str, type]:
    import torchmetrics

    found = {}
    for name in dir(torchmetrics):
        cls = getattr(torchmetrics, name)
        if inspect.isclass(cls) and issubclass(cls, torchmetrics.Metric) and cls is not torchmetrics.Metric:
            found[re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()] = cls
    return found


registry = Registry("metric", fallback=lambda name: _torchmetrics_classes().get(name),
                    fallback_names=lambda: list(_torchmetrics_classes()))
register = registry.register
make = registry.make
