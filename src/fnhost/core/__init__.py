"""Infrastructure the domain services share and that knows nothing of them: background
service loops, rate limiting, live log fan-out, replica liveness."""
