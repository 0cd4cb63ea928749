"""vidpeft from Python: train a run, load it (or an export), predict and evaluate.

    import vidpeft

    result = vidpeft.train("demo", overrides=["data.manifest=data/manifest.parquet", "optim.epochs=2"])
    model = vidpeft.load(result["output_dir"])          # a run directory, or a `vidpeft export` file
    rows = model.predict(["clip1.mp4", "clip2.mp4"], top_k=3)
    metrics = model.evaluate("data/manifest.parquet", split="val")

Configs, search spaces and campaigns that ship with vidpeft are found by name (``vidpeft.shipped``).
The command line (`vidpeft train|tune|ablate|...`) is the same library; each verb's module is in
pipelines/cli/.
"""

from __future__ import annotations

from vidpeft.model import Model, load
from vidpeft.training import train

__version__ = "0.1.0"
__all__ = ["Model", "load", "train", "__version__"]
