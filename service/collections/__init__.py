"""The domain: collections of labelled examples, their prototype indexes, the encoder and the
batched inference path, and keeping replicas in sync. Imports :mod:`service.storage` and the
shared top-level modules but the settings (:mod:`service.state` wires them in), never the HTTP
side (edge, api) nor the running service's state."""
