"""The compiled connection core (``_connection_core.pxi``), the twin of
``anynet._connection_core``: it calls the compiled framing's reader and
writer (``anynet._framing_c``) as C functions.
"""

from anynet._framing_c cimport FrameReader, FrameWriter


include "_connection_core.pxi"
