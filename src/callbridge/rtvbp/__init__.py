"""RTVBP: sans-I/O envelope, catalogs and negotiation; asyncio session runtime; WebSocket transport; auth."""
