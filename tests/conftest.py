"""Shared fixtures: both framing backends, and both event loops."""

import asyncio
import importlib
import os

import pytest

try:
    import uvloop
except ImportError:  # uvloop does not exist on Windows
    uvloop = None

EXTENSIONS_DISABLED = os.environ.get("ANYNET_NO_EXTENSIONS", "") not in ("", "0")

# With extensions enabled the compiled backend must be importable: a build that
# silently fell back to pure Python fails these tests instead of skipping them.
FRAMING_BACKENDS = ["python"] if EXTENSIONS_DISABLED else ["compiled", "python"]
_BACKEND_MODULES = {"compiled": "anynet._speedups", "python": "anynet._framing"}


@pytest.fixture(params=FRAMING_BACKENDS)
def framing(request):
    """The framing module under test: every framing test runs on each backend."""
    return importlib.import_module(_BACKEND_MODULES[request.param])


def pytest_asyncio_loop_factories(config, item):
    """Every async test runs on the standard event loop and on uvloop."""
    factories = {"asyncio": asyncio.new_event_loop}
    if uvloop is not None:
        factories["uvloop"] = uvloop.new_event_loop
    return factories


def pytest_report_header(config):
    from anynet import _backend

    return f"anynet framing backend: {_backend.BACKEND}; tested backends: {FRAMING_BACKENDS}"
