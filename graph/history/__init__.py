"""A device's provisioning history: events, filters, and the lazily paged connection."""
