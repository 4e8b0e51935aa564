"""The browser tests run a pipeline as the end-to-end tests do: the same fixtures."""

from tests.e2e.conftest import emulator, make_pipeline, pipeline

__all__ = ["emulator", "make_pipeline", "pipeline"]
