"""``python -m service``: serve the app with uvicorn on ``PROTONET_HOST``:``PROTONET_PORT``.

python -m service                       # serve (PROTONET_WORKERS processes)
python -m service migrate               # bring the database schema up to date, then exit
python -m service embeddings            # stored embeddings by model version, live processes
python -m service embeddings --drop-unused   # drop versions no live process serves
"""

from __future__ import annotations

# First, before anything imports torch, numpy or FAISS (service.edge.logs does, through protonet):
# OpenMP and BLAS read their thread counts when they load.
from service.threads import set_thread_environment, thread_environment_from_variables

thread_environment_from_variables()

import argparse  # noqa: E402
import ctypes  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from types import FrameType  # noqa: E402

import uvicorn  # noqa: E402

from service.edge.logs import logging_config  # noqa: E402
from service.settings import Settings  # noqa: E402


def exit_quietly(_signal: int, _frame: FrameType | None) -> None:
    """After a graceful shutdown uvicorn re-raises the signal it got, expecting the default
    action; for SIGTERM that would end the process with status 143 after a clean drain. This
    handler takes that re-raised SIGTERM, so a drained stop exits 0."""


# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
LARGE_BLOCK = 128 * 1024

# With PROTONET_WORKERS > 1, uvicorn's supervisor pings each worker every half second and kills
# (then restarts from scratch) one that does not answer within this many seconds. Its default,
# 5 s, is shorter than a loaded machine can keep a starting worker off the CPU (or holding the
# GIL while it loads torch), so under load start-up could loop: each try killed and begun again.
# A hung worker is still replaced, after a minute.
WORKER_HEALTHCHECK_SECONDS = 60


def return_freed_memory_to_the_os() -> None:
    """Keep glibc from holding on to the memory of large request bodies after they are freed.

    By default glibc raises its mmap threshold (up to 32 MiB) each time a large block is
    freed, so later multi-megabyte bodies come from the heap, whose freed pages stay in RSS:
    after bursts of 16 MB bodies RSS stayed 14-30% above idle (benchmarks/request_memory.py).
    Fixed thresholds keep large blocks mmapped (unmapped on free) and trim the heap's top.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return
    mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK)
    mallopt(M_TRIM_THRESHOLD, LARGE_BLOCK)


def serve(settings: Settings) -> None:
    return_freed_memory_to_the_os()
    set_thread_environment(settings.torch_threads, settings.workers)
    signal.signal(signal.SIGTERM, exit_quietly)  # uvicorn's own handler replaces it while serving
    uvicorn.run(
        "service.app:create_server_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=logging_config(settings.log_level, settings.log_format),
        access_log=False,  # RequestContextMiddleware logs each request, with its id
        # The app alone decides whose X-Forwarded-For to believe (PROTONET_TRUSTED_PROXIES);
        # uvicorn's default would trust 127.0.0.1's, letting a local caller pick its address.
        proxy_headers=False,
        # Each worker process keeps its own indexes, in sync through the change feed.
        workers=settings.workers,
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
        # SIGTERM stops accepting connections and waits this long for in-flight requests.
        timeout_graceful_shutdown=settings.shutdown_timeout,
    )


def migrate(settings: Settings) -> int:
    from service.storage.engine import create_storage_engine
    from service.storage.migrations import head_revision, upgrade_database

    engine = create_storage_engine(settings.resolved_database_url())
    try:
        changed = upgrade_database(engine, settings.resolved_default_model())
    finally:
        engine.dispose()
    print(f"schema {'migrated to' if changed else 'already at'} revision {head_revision()}")
    return 0


def embeddings(settings: Settings, drop_unused: bool, force: bool) -> int:
    """Print stored embeddings by model version and the live processes serving each; with
    ``drop_unused``, delete the versions that no live process serves."""
    from service.collections.sync import LIVE_WITHIN
    from service.storage.repository import Storage

    storage = Storage(settings.resolved_database_url(), migrate=False)
    try:
        counts = storage.count_embeddings_by_version()
        replicas = storage.live_replicas(LIVE_WITHIN)
        served = {version for replica in replicas for version in replica.model_version.split(",")}
        print(f"{storage.count_examples()} stored examples; embeddings by model version:")
        for version, count in sorted(counts.items()):
            processes = [r for r in replicas if version in r.model_version.split(",")]
            state = ", ".join(
                f"{r.host}:{r.pid}{'' if r.ready else ' (starting)'}" for r in processes
            )
            print(f"  {version}  {count:>9}  served by: {state or 'no live process'}")
        unused = sorted(set(counts) - served)
        if not drop_unused:
            if unused:
                print(f"unused versions (drop with --drop-unused): {', '.join(unused)}")
            return 0
        if not replicas and not force:
            print("no live process: nothing dropped (start the service first, or --force)")
            return 1
        dropped = storage.drop_embeddings(unused) if unused else 0
        print(f"dropped {dropped} embeddings of {len(unused)} unused versions")
        return 0
    finally:
        storage.close()


def main(argv: list[str] | None = None, prog: str = "python -m service") -> int:
    """``prog``: how the user invoked us, for help and errors (``protonet`` as a script)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve the API (the default)")
    commands.add_parser("migrate", help="bring the database schema up to date, then exit")
    listing = commands.add_parser(
        "embeddings", help="stored embeddings by model version, and the live processes"
    )
    listing.add_argument(
        "--drop-unused", action="store_true", help="drop versions that no live process serves"
    )
    listing.add_argument(
        "--force", action="store_true", help="drop even when no process is live at all"
    )
    args = parser.parse_args(argv)
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(message)s")
    if args.command == "migrate":
        return migrate(settings)
    if args.command == "embeddings":
        return embeddings(settings, args.drop_unused, args.force)
    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
