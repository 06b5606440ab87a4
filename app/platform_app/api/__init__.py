"""HTTP routers for the /api prefix."""
