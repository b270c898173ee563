"""An embedded UWS v2 upstream: a seeded fleet served over real SOAP/HTTP."""

MOUNT = "/simulator/api/v2"
"""Where the simulator sits in a server, mirroring the real service's <host>/api/v2."""
