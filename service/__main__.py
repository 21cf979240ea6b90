"""``python -m service``: serve the app with uvicorn on ``PROTONET_HOST``:``PROTONET_PORT``.

python -m service                       # serve (PROTONET_WORKERS processes)
python -m service migrate               # bring the database schema up to date, then exit
python -m service embeddings            # stored embeddings by model version, live processes
python -m service embeddings --drop-unused   # drop versions no live process serves
python -m service snapshot export --collection NAME --out FILE   # a snapshot, from the database
python -m service snapshot import FILE --collection NAME         # ... restored into it
"""

from __future__ import annotations

# First, before anything imports torch, numpy or FAISS (service.edge.logs does, through protonet):
# OpenMP and BLAS read their thread counts when they load.
from service.threads import set_thread_environment, thread_environment_from_variables

thread_environment_from_variables()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from types import FrameType  # noqa: E402

import uvicorn  # noqa: E402
from pydantic import ValidationError  # noqa: E402
from uvicorn.supervisors import Multiprocess  # noqa: E402

from protonet.errors import InvalidInputError, ProtonetError  # noqa: E402
from service.edge.auth import KeyConfigError  # noqa: E402
from service.edge.http_limits import HeaderLimits, bounded_http_protocol  # noqa: E402
from service.edge.logs import logging_config  # noqa: E402
from service.settings import Settings, explain_settings_error, settings_help  # noqa: E402

logger = logging.getLogger("service.startup")

# The exit status of a start that failed (uvicorn's, for a lifespan that failed), whatever failed.
STARTUP_FAILURE = 3
# Invalid settings, as argparse exits on invalid arguments.
USAGE_ERROR = 2


def exit_quietly(_signal: int, _frame: FrameType | None) -> None:
    """After a graceful shutdown uvicorn re-raises the signal it got, expecting the default
    action; for SIGTERM that would end the process with status 143 after a clean drain. This
    handler takes that re-raised SIGTERM, so a drained stop exits 0."""


# With PROTONET_WORKERS > 1, uvicorn's supervisor pings each worker every half second and kills
# (then restarts from scratch) one that does not answer within this many seconds. Its default,
# 5 s, is shorter than a loaded machine can keep a starting worker off the CPU (or holding the
# GIL while it loads torch), so under load start-up could loop: each try killed and begun again.
# A hung worker is still replaced, after a minute; a worker that dies while a ping is pending is
# noticed that late too.
WORKER_HEALTHCHECK_SECONDS = 60


def serve(settings: Settings) -> int:
    """Serve until stopped; returns the exit status."""
    set_thread_environment(settings.torch_threads, settings.workers)
    signal.signal(signal.SIGTERM, exit_quietly)  # uvicorn's own handler replaces it while serving
    config = uvicorn.Config(
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
        # httptools bounds neither the size nor the arrival time of a request's headers.
        http=bounded_http_protocol(
            HeaderLimits(max_bytes=settings.max_header_bytes, timeout=settings.header_timeout)
        ),
    )
    return run_uvicorn(config)


def run_uvicorn(config: uvicorn.Config) -> int:
    """What ``uvicorn.run`` does, on a socket bound first, before any model loads or the
    database is opened: a busy port fails at once, not after seconds of start-up that created
    a data directory for nothing. uvicorn serves on that very socket (its workers too), so no
    other process can take the port in between. Returns the exit status."""
    try:
        listener = listening_socket(config.host, config.port)
    except OSError as error:
        logger.error(
            "startup failed: cannot listen on %s:%d: %s (another server on it? set PROTONET_PORT)",
            config.host,
            config.port,
            error,
        )
        return STARTUP_FAILURE
    logger.info("listening on http://%s:%d", config.host, listener.getsockname()[1])
    return serve_on(listener, config)


def serve_on(listener: socket.socket, config: uvicorn.Config) -> int:
    """uvicorn on a bound socket, with as many workers as configured; the exit status."""
    if config.workers > 1:
        supervisor = Multiprocess(config, sockets=[listener])
        supervisor.run()  # returns once a worker failed to start, or on a signal
        failed = any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes)
        return STARTUP_FAILURE if failed else 0
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the Ctrl-C it stopped on
        server.run(sockets=[listener])
    return 0 if server.started else STARTUP_FAILURE


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` as uvicorn binds one; raises :class:`OSError`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    # As uvicorn: a restart need not wait for the last run's connections to time out.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError:
        listener.close()
        raise
    listener.set_inheritable(True)  # handed to the worker processes
    return listener


def migrate(settings: Settings) -> int:
    from service.storage.engine import create_storage_engine, reported_as_unavailable
    from service.storage.migrations import head_revision, upgrade_database

    url = settings.resolved_database_url()
    with reported_as_unavailable(url):
        engine = create_storage_engine(url)
        try:
            changed = upgrade_database(engine, settings.resolved_default_model())
        finally:
            engine.dispose()
    print(f"schema {'migrated to' if changed else 'already at'} revision {head_revision()}")
    return 0


def embeddings(settings: Settings, drop_unused: bool, force: bool) -> int:
    """Print stored embeddings by model version and the live processes serving each; with
    ``drop_unused``, delete the versions that no live process serves."""
    from service.storage.repository import LIVE_WITHIN, Storage

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


RAW_HELP = argparse.RawDescriptionHelpFormatter  # the settings' help is laid out already


def command_line(prog: str) -> argparse.ArgumentParser:
    description = __doc__.split("\n")[0]
    serving = settings_help()  # the default command's settings: on both help pages
    parser = argparse.ArgumentParser(
        prog=prog, description=description, epilog=serving, formatter_class=RAW_HELP
    )
    commands = parser.add_subparsers(dest="command")
    commands.add_parser(
        "serve",
        help="serve the API (the default)",
        description="Serve the HTTP API; settings are PROTONET_* environment variables.",
        epilog=serving,
        formatter_class=RAW_HELP,
    )
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
    add_snapshot_commands(commands)
    return parser


def add_snapshot_commands(commands: argparse._SubParsersAction) -> None:
    snapshot = commands.add_parser(
        "snapshot",
        help="export a collection to a snapshot file, or import one, against the database",
        description="Snapshots against the database of PROTONET_DATABASE_URL (or "
        "PROTONET_DATA_DIR), no running service needed: the files that GET and POST "
        "/v1/collections/{name}/snapshot write and read (docs/service.md, Snapshots).",
    )
    actions = snapshot.add_subparsers(dest="action", required=True)
    export = actions.add_parser("export", help="write a collection to a snapshot file")
    export.add_argument("--out", type=Path, help="the file to write (default: stdout)")
    export.add_argument(
        "--no-embeddings",
        dest="embeddings",
        action="store_false",
        help="leave the stored embeddings out (a restore embeds every example again)",
    )
    restore = actions.add_parser("import", help="restore a snapshot file into a new collection")
    restore.add_argument("file", type=Path, help="the snapshot file ('-': stdin)")
    restore.add_argument(
        "--model", help="the served model (PROTONET_MODELS) to bind it to; default: the snapshot's"
    )
    for action in (export, restore):
        action.add_argument("--collection", required=True, help="the collection's name")
        action.add_argument("--tenant", default="default", help="its tenant (default: default)")


def main(argv: list[str] | None = None, prog: str = "python -m service") -> int:
    """``prog``: how the user invoked us, for help and errors (``protonet`` as a script).
    Returns the exit status: 2 for invalid settings (each problem on its own line)."""
    args = command_line(prog).parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as error:
        return refuse(explain_settings_error(error))
    if args.command in ("migrate", "embeddings", "snapshot"):
        return run_command(args, settings)
    from service.app import authenticator_for  # the app's modules: only to serve

    try:  # read the API keys as each worker will: a bad key file is a bad setting too
        authenticator_for(settings)
    except KeyConfigError as error:
        return refuse([str(error)])
    return serve(settings)


def refuse(problems: list[str]) -> int:
    """Invalid settings: each problem on its own line, no traceback."""
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return USAGE_ERROR


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    """``migrate`` or ``embeddings``: their report on stdout; warnings, errors and our own
    progress on stderr, but not the libraries' INFO lines (Alembic setting up its plugins,
    FAISS looking for a build for this CPU: "ModuleNotFoundError"), which read as errors."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("service").setLevel(settings.log_level.upper())
    try:
        if args.command == "migrate":
            return migrate(settings)
        if args.command == "snapshot":
            return snapshot(settings, args)
        return embeddings(settings, args.drop_unused, args.force)
    except ProtonetError as error:  # the database is unreachable, or its schema outdated
        print(f"error: {error}", file=sys.stderr)
        return USAGE_ERROR if args.command == "snapshot" else 1


def snapshot(settings: Settings, args: argparse.Namespace) -> int:
    from service.snapshot_command import export_snapshot, import_snapshot

    if args.action == "export":
        export_snapshot(settings, args.collection, args.tenant, args.out, args.embeddings)
    else:
        try:
            import_snapshot(settings, args.file, args.collection, args.tenant, args.model)
        except OSError as error:
            raise InvalidInputError(f"cannot read {args.file}: {error.strerror}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
