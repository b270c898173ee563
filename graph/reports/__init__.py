"""Fleet reports: computed in a request, or as jobs that any replica can answer for."""
