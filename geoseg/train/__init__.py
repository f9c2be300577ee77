"""Training: config, window sampling and the loop that writes a bundle."""

from geoseg.train.config import TrainConfig, load_train_config
from geoseg.train.loop import train

__all__ = ["TrainConfig", "load_train_config", "train"]
