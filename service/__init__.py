"""HTTP service for few-shot classification with a Prototypical Network encoder.

Importing this package loads nothing: the app is built by :func:`service.app.create_app`
(whose lifespan loads the model and storage), and :mod:`service.client` needs only httpx and
numpy, so client users do not import torch.
"""
