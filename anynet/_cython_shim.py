"""The one name of the ``cython`` module that ``anynet._framing`` and
``anynet._connection_core`` read when they run as plain Python and Cython is
not installed (Cython is needed to build the extension, never to run
anynet)."""

#: The module runs as plain Python.
compiled = False
