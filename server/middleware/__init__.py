"""Pure ASGI middleware, one per module; each passes the scope types it does not handle through."""
