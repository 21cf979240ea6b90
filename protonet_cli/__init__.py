"""The ``protonet`` command: one entry point for the trainer and the service.

    protonet train --preset omniglot-lake      # = python -m training train ...
    protonet evaluate --checkpoint best.pt     # = python -m training evaluate ...
    protonet calibrate --checkpoint best.pt    # = python -m training calibrate ...
    protonet data omniglot --dest data/omniglot
    protonet data emoji --dest data/emoji      # the pictures model's data (npm)
    protonet serve                             # = python -m service
    protonet migrate | embeddings              # = python -m service migrate | embeddings
    protonet snapshot export|import            # = python -m service snapshot ...

It only dispatches, importing the half it runs and nothing else, so ``protonet serve`` sets the
service's thread environment before torch loads, and an install with only the ``serve`` extra
never imports the trainer. ``protonet`` is not ``protonet/`` (the core, which imports neither).
"""

from __future__ import annotations

import sys

TRAINER_COMMANDS = {
    "train": "meta-train a model: Omniglot, your own images, Banking77 intents or emoji pictures",
    "evaluate": "few-shot accuracy of a checkpoint over random episodes",
    "calibrate": "measure a checkpoint's rejection thresholds for unknown inputs",
    "data": "fetch or copy and validate a dataset",
}
SERVICE_COMMANDS = {
    "serve": "serve the HTTP API (settings: PROTONET_* environment variables)",
    "migrate": "bring the service's database schema up to date, then exit",
    "embeddings": "stored embeddings by model version, and the live service processes",
    "snapshot": "export a collection to a snapshot file, or import one, against the database",
}


def usage() -> str:
    lines = ["usage: protonet COMMAND [options]   (protonet COMMAND --help for its options)", ""]
    for title, commands in (("trainer", TRAINER_COMMANDS), ("service", SERVICE_COMMANDS)):
        lines.append(f"{title}:")
        lines += [f"  {name:<11} {about}" for name, about in commands.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command in TRAINER_COMMANDS:
        return run_trainer(command, rest)
    if command in SERVICE_COMMANDS:
        return run_service(command, rest)
    print(f"error: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
    return 2


def run_trainer(command: str, rest: list[str]) -> int:
    try:
        from training.cli import main as trainer_main
    except ImportError as error:
        return missing_extra("train", error)
    return trainer_main([command, *rest], prog="protonet")


def run_service(command: str, rest: list[str]) -> int:
    try:
        from service.__main__ import main as service_main
    except ImportError as error:
        return missing_extra("serve", error)
    return service_main([command, *rest], prog="protonet")


def missing_extra(extra: str, error: ImportError) -> int:
    print(
        f"error: {error}; install the '{extra}' extra: pip install 'protonet-service[{extra}]'",
        file=sys.stderr,
    )
    return 2
