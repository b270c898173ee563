"""Data: event records, device records, instants. Nothing here knows about GraphQL or SOAP."""
