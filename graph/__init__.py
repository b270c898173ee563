"""The service's surface: the GraphQL schema, the Starlette app, settings and the CLI."""
