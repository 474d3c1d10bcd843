"""fnhost: a self-hosted Functions service for Python, speaking the CDF Functions API."""

__version__ = "0.1.0"
