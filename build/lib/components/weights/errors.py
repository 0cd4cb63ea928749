"""The one error the weights layer raises (its own module, so every reader can import it)."""

from __future__ import annotations

from components.config import ConfigError


class WeightsError(ConfigError):
    """A weights file cannot be read or does not fit the model; the message names the file."""
