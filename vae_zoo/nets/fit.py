"""The error a model gives when the configured net does not take the shape arguments it passes."""

from collections.abc import Iterator
from contextlib import contextmanager

from vae_zoo.errors import ConfigError


@contextmanager
def nets_must_fit(model_name: str, expected: str) -> Iterator[None]:
    """Turn a net factory's ``TypeError`` about its shape arguments into a config error."""
    try:
        yield
    except TypeError as error:
        raise ConfigError(
            f"{model_name} needs {expected}, but the configured net does not take its shape "
            f"arguments ({error}). Pick a matching `net=` option or leave the model's default."
        ) from error
