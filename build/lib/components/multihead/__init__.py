"""Multi-dataset, multi-task models: shared backbone and adapters, one head per dataset.

``config.py`` (one head's settings, ``model.heads``, and the kind's model config), ``model.py`` (model kind ``multi_dataset``,
registered by ``components.model`` at its end). The packed target every clip carries, the loss and
the per-dataset metrics are the heads' Task: ``components/tasks/heads.py``.
"""

from components.multihead.config import DatasetHeadConfig, MultiDatasetModelConfig, dataset_heads

__all__ = ["DatasetHeadConfig", "MultiDatasetModelConfig", "dataset_heads"]
