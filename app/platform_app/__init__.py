"""Reference FastAPI application deployed by the lab."""

__version__ = "1.2.1"
