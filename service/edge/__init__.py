"""What guards the edge of the HTTP service: API keys and roles, admission (authentication,
rate and concurrency limits), request body size, request ids and access logs, metrics, and the
one mapping of errors to HTTP responses. Pure ASGI middleware and plain functions: no routes."""
