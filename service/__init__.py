"""HTTP service for few-shot classification with a Prototypical Network encoder.

Importing this package loads nothing: the app is built by :func:`service.app.create_app`
(whose lifespan loads the model and storage), and :mod:`service.client` needs only httpx and
numpy, so client users do not import torch.

The modules are grouped by role, and imports run one way, from the outer rooms to the inner
ones (tests/test_import_direction.py checks it):

* shared modules, which import no other part of the service: ``errors`` (every error the
  service raises), ``settings``, ``threads``, ``client``;
* ``storage``: the database engine, tables, repository and schema migrations;
* ``collections``: the domain (collections, their indexes, the encoder and the inference
  pipeline, the change feed); it reads no settings;
* ``state``: the running service (start, readiness, stop), built from the settings: the one
  place that wires them into storage and the domain;
* ``edge``: what guards the HTTP edge (auth, admission, limits, logs, metrics, and the one
  mapping of errors to responses);
* ``api``: the routes, their dependencies and models, and the OpenAPI document;
* the app that wires them: ``app`` (``create_app``), ``__main__`` (``python -m service``),
  ``launcher`` (a server in a subprocess, for tests and benchmarks).
"""
