"""anynet: a fast WebSocket (RFC 6455) client and server for asyncio."""

__version__ = "0.1.0"
