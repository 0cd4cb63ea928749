"""One training run: the driver (train.py), the Ray Train worker loop (train_loop.py), checks, checkpoints, progress."""
