"""The HTTP API: routers, their dependencies, the request and response models (which are the
OpenAPI documentation), fast JSON responses, bounded JSON body parsing, and the OpenAPI
document's completion."""
