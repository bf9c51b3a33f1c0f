"""Training SegGPT by masked painting: :func:`train` (the loop, :mod:`.trainer`), typed settings
(:mod:`.config`), state and exact resume (:mod:`.state`), data order (:mod:`.loader`), the CSV log
(:mod:`.logbook`), patch masks (:mod:`.masking`) and the optimiser (:mod:`.optim`)."""

from .config import TrainConfig, TrainJobConfig, parse_config
from .trainer import Trainer, train

__all__ = ["TrainConfig", "TrainJobConfig", "Trainer", "parse_config", "train"]
