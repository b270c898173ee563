"""Provisioning recipes: types, queries, mutations, and their live events."""
