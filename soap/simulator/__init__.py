"""An embedded UWS v2 upstream: a seeded fleet served over real SOAP/HTTP."""
