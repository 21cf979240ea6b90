"""The domain: collections of labelled examples, their prototype indexes, the encoder and the
batched inference path, keeping replicas in sync, and the running service's lifecycle. Imports
:mod:`service.storage` and the shared top-level modules, never the HTTP side (edge, api)."""
