"""The HTTP edge: routes per resource, the CDF wire format, the auth dependency."""
