"""The one place that chooses the implementation of the hot path.

The compiled ``anynet._speedups`` and ``anynet._deflate_c`` are used when they
were built; the pure-Python ``anynet._framing``, ``anynet._connection_core``
and ``anynet._deflate`` otherwise, or whenever
``ANYNET_NO_EXTENSIONS`` is set to anything but ``0`` at import time. The
two sides export the same names.
"""

import os

EXTENSIONS_DISABLED = os.environ.get("ANYNET_NO_EXTENSIONS", "") not in ("", "0")

if EXTENSIONS_DISABLED:
    from anynet import _connection_core as core
    from anynet import _deflate as deflate
    from anynet import _framing as framing
else:
    try:
        from anynet import _deflate_c as deflate  # type: ignore[no-redef]
        from anynet import _speedups as framing  # type: ignore[no-redef]
        from anynet import _speedups as core  # type: ignore[no-redef]
    except ImportError:
        from anynet import _connection_core as core
        from anynet import _deflate as deflate
        from anynet import _framing as framing

BACKEND = "python" if framing.__name__ == "anynet._framing" else "compiled"

FrameReader = framing.FrameReader
FrameWriter = framing.FrameWriter
apply_mask = framing.apply_mask
buffer_exported = framing.buffer_exported
validate_utf8 = framing.validate_utf8
Utf8Validator = framing.Utf8Validator
Deflater = deflate.Deflater
Inflater = deflate.Inflater
ConnectionCore = core.ConnectionCore
wake_tasks_now = core.wake_tasks_now
