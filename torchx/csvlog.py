"""Moved to torchx.loggers.csvlog; this name keeps `from torchx.csvlog import ...` working."""

from torchx.loggers.csvlog import FIXED, CSVLogger, MetricsCSV, read  # noqa: F401
