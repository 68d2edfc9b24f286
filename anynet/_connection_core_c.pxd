# The C types of anynet/_connection_core.py when Cython compiles it as
# anynet._connection_core_c (an augmenting .pxd: the logic is all in the
# .py). The reader and writer are the compiled framing's, whose get_buffer,
# buffer_updated and encode the core calls as C functions. Every attribute is
# public: the Python subclass (anynet._ws_protocol.WebSocketClient) reads and
# writes them.

cimport cython
from anynet._framing_c cimport FrameReader, FrameWriter

cdef object OPEN, CLOSING, CLOSED
cdef int OP_BINARY, OP_TEXT
cdef Py_ssize_t LARGE_PAYLOAD_SIZE
cdef list _NOTHING_HELD

cdef Py_ssize_t _clamped(object count) except? -1


cdef class ConnectionCore:
    cdef public object _loop
    cdef public FrameReader _reader
    cdef public object get_buffer
    cdef public FrameWriter _writer
    cdef public object _deflater
    cdef public Py_ssize_t _compress_min
    cdef public object _transport
    cdef public bint _transport_lost
    cdef public object _state
    cdef public bint _receiving
    cdef public object _deferred_failure
    cdef public object _messages
    cdef public list _receivers
    cdef public Py_ssize_t _pause_level
    cdef public Py_ssize_t _resume_level
    cdef public bint _reading_paused
    cdef public list _pending
    cdef public Py_ssize_t _pending_size
    cdef public list _write_batch
    cdef public Py_ssize_t _write_limit
    cdef public bint _writing_paused
    cdef public object _on_message

    @cython.locals(deflater=object, compressed=bytes)
    cpdef bytes _compressed_frame(self, int opcode, data)
    @cython.locals(pending=list, batch=list)
    cpdef void _write(self, bytes data) except *
    @cython.locals(pending=list)
    cpdef void _flush(self) except *
    @cython.locals(events=list, receivers=list)
    cpdef void buffer_updated(self, Py_ssize_t nbytes) except *
    @cython.locals(pending=list, receivers=list)
    cdef object _receiver(self)
    cdef void _refuse_hopeless_wait(self, object kind) except *
    cdef object _next_message(self, object kind)
    @cython.locals(pending=list, receivers=list)
    cdef void _dispatch(self, list events) except *
    cdef bint _deliver(self, object callback, object message) except -1


@cython.locals(eager=bint)
cpdef void wake_tasks_now(object loop, list waiters) except *
