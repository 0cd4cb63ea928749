"""Multi-dataset, multi-task models: shared backbone and adapters, one head per dataset.

``config.py`` (one head's settings, ``model.heads``), ``targets.py`` (the packed target every clip
carries), ``model.py`` (model kind ``multi_dataset``, registered by ``components.model`` at its end),
``metrics.py`` (one metric accumulator per dataset).
"""

from components.multihead.config import DatasetHeadConfig

__all__ = ["DatasetHeadConfig"]
