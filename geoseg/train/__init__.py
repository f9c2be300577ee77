"""Training: config, labels, window sampling, losses and the loop that writes a bundle.

The loop is imported lazily, so ``geoseg.evaluate`` can use the label readers without importing torch's
training stack.
"""

from typing import Any

from geoseg.train.config import TrainConfig, load_train_config

__all__ = ["TrainConfig", "load_train_config", "train"]


def __getattr__(name: str) -> Any:
    if name == "train":
        from geoseg.train.loop import train

        return train
    raise AttributeError(f"module 'geoseg.train' has no attribute {name!r}")
