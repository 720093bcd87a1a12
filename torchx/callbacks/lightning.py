"""Lightning's own callbacks under snake_case names, so a config can list them."""

from pytorch_lightning import callbacks as plc

from torchx.callbacks import register

for _name, _cls in {
    "early_stopping": plc.EarlyStopping,
    "lr_monitor": plc.LearningRateMonitor,
    "model_summary": plc.ModelSummary,
    "stochastic_weight_averaging": plc.StochasticWeightAveraging,
    "gradient_accumulation_scheduler": plc.GradientAccumulationScheduler,
    "timer": plc.Timer,
    "device_stats_monitor": plc.DeviceStatsMonitor,
    "batch_size_finder": plc.BatchSizeFinder,
    "learning_rate_finder": plc.LearningRateFinder,
    # a progress bar of one's own replaces torchx's (Lightning runs one at a time)
    "tqdm_bar": plc.TQDMProgressBar,
    "rich_bar": plc.RichProgressBar,  # needs the `rich` package
}.items():
    register(_name)(_cls)
