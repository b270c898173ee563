"""The HTTP service around the GraphQL schema."""
