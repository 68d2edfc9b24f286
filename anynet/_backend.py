"""The one place that chooses the implementation of the hot path.

The framing, the connection core and permessage-deflate are each one
source, compiled by Cython under another name: ``anynet/_framing.py`` as
``anynet._framing_c``, ``anynet/_connection_core.py`` as
``anynet._connection_core_c``, ``anynet/_deflate.py`` as
``anynet._deflate_c``. The compiled modules are used when they were built;
the sources themselves otherwise, or whenever ``ANYNET_NO_EXTENSIONS`` is set
to anything but ``0`` at import time.
"""

import os
from typing import TYPE_CHECKING

EXTENSIONS_DISABLED = os.environ.get("ANYNET_NO_EXTENSIONS", "") not in ("", "0")

if TYPE_CHECKING or EXTENSIONS_DISABLED:
    from anynet import _connection_core as core
    from anynet import _deflate as deflate
    from anynet import _framing as framing
else:
    try:
        from anynet import _connection_core_c as core
        from anynet import _deflate_c as deflate
        from anynet import _framing_c as framing
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
