"""RTVBP: sans-I/O envelope, catalogs, negotiation; asyncio runtime; WebSocket; auth; SDK."""
