"""Building functions: zip safety, handler validation, uv environments cached by hash."""
