"""How data is fetched and computed. Plain async Python: no GraphQL types here."""
