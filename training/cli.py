"""The trainer's command line: ``python -m training {data,train,evaluate}``.

:func:`main` takes the program name, so a console script (``protonet train ...``) shows its
own name in usage lines and examples.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from protonet.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from protonet.embedding import pick_device
from protonet.errors import ProtonetError
from training import download, omniglot
from training.checks import ClassSet, EpisodeFlags, check_episodes
from training.config import (
    DEFAULT_DATA,
    DEVICES,
    PRESETS,
    TrainConfig,
    apply_preset,
    choices,
    flag,
    help_text,
)
from training.episodes import EpisodeShape
from training.evaluate import (
    CLASS_SETS,
    STANDARD_SETTINGS,
    EvaluationResult,
    Selection,
    embed_imageset,
    evaluate,
    select_folder_classes,
)
from training.folder import load_folder

PROG = "python -m training"

DESCRIPTION = """\
Train and evaluate Prototypical Network encoders for few-shot image classification:
fetch Omniglot, meta-train an encoder on Omniglot or on your own folder of images, and
measure a checkpoint's few-shot accuracy over random episodes."""

EPILOG = """\
examples:
  %(prog)s data omniglot --dest data/omniglot
  %(prog)s train --preset omniglot-lake --data data/omniglot
  %(prog)s train --split folder --data ROOT --out runs/mine --way 5 --shot 5
  %(prog)s evaluate --checkpoint runs/mine/best.pt --data ROOT --way 2

'%(prog)s COMMAND --help' describes a command and all of its flags."""

DATA_DESCRIPTION = """\
Fetch the Omniglot zips (images_background.zip, images_evaluation.zip) and the Vinyals et al.
split files into --dest, checked against their published MD5 sums; or, with --from, validate a
local copy (layout and image counts) and copy it."""

DATA_EPILOG = """\
examples:
  %(prog)s omniglot --dest data/omniglot                       # download (needs internet)
  %(prog)s omniglot --from ../shared/data/omniglot --dest data/omniglot"""

TRAIN_DESCRIPTION = """\
Meta-train a Conv-4 encoder on few-shot episodes and keep the checkpoint with the best
validation accuracy. Data: Omniglot (--split lake or vinyals) or your own images (--split
folder --data ROOT, with ROOT/<class name>/<image files>; --val-fraction of the classes are
held out for validation). Every setting is checked against the data before the first
episode. A run writes best.pt, resume_state.pt, metrics.jsonl, learning_curve.png and
config.json into --out; an --out that already holds a run needs --resume or --overwrite.
Defaults below are without --preset; a preset sets a tested recipe, and flags override it."""

TRAIN_EPILOG = """\
examples:
  # the bundled model's recipe (images_background only; 72 minutes on 2 CPU cores)
  %(prog)s --preset omniglot-lake --data data/omniglot --max-minutes 72
  # your own images: 20%% of the classes are held out for validation, --way is at most the rest
  %(prog)s --split folder --data ROOT --out runs/mine --way 5 --shot 5
  # colour photos
  %(prog)s --split folder --data ROOT --out runs/photos --way 5 --shot 5 --channels 3
  # continue an interrupted run, or start it again from scratch
  %(prog)s --split folder --data ROOT --out runs/mine --way 5 --shot 5 --resume
  %(prog)s --split folder --data ROOT --out runs/mine --way 5 --shot 5 --overwrite"""

EVALUATE_DESCRIPTION = """\
Few-shot accuracy of a checkpoint: the mean over random episodes, with a 95% confidence
interval. Omniglot: --data DIR --split NAME. Your own images: --data ROOT alone; when the
checkpoint was trained on ROOT, evaluation uses the classes held out from training by default
(--classes). Each image is embedded once and the episodes reuse the embeddings."""

EVALUATE_EPILOG = """\
examples:
  %(prog)s --checkpoint models/omniglot-conv4.pt --data data/omniglot --split evaluation --table
  %(prog)s --checkpoint runs/mine/best.pt --data ROOT --way 2 --shot 5
  %(prog)s --checkpoint runs/mine/best.pt --data NEW_CLASSES --way 5 --json"""


def _formatter(prog: str) -> argparse.HelpFormatter:
    # Raw descriptions keep the examples' line breaks; flag help is still wrapped.
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`TrainConfig` field; unset flags keep the preset/default value."""
    defaults = TrainConfig()
    for spec in fields(TrainConfig):
        default = getattr(defaults, spec.name)
        text = help_text(spec.name).replace("%", "%%")  # argparse %-formats help
        if isinstance(default, bool):
            parser.add_argument(
                flag(spec.name),
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"{text} (default: {default})",
            )
        else:
            parser.add_argument(
                flag(spec.name),
                type=type(default),
                default=None,
                choices=choices(spec.name) or None,
                help=f"{text} (default: {default!r})",
            )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    config = apply_preset(TrainConfig(), args.preset)
    overrides = {
        f.name: getattr(args, f.name)
        for f in fields(TrainConfig)
        if getattr(args, f.name) is not None
    }
    return replace(config, **overrides)


def command_train(args: argparse.Namespace) -> int:
    from training.trainer import Trainer  # heavy import only when training

    config = config_from_args(args)
    best = Trainer(config).train()
    checkpoint = load_checkpoint(best)
    validation = checkpoint.metadata["validation"]
    print(
        f"best checkpoint: {best} (version {checkpoint.version}); validation "
        f"{validation['way']}-way {validation['shot']}-shot "
        f"{100 * validation['accuracy']:.2f}% ± {100 * validation['ci95']:.2f}%"
    )
    return 0


def _is_omniglot(data: Path) -> bool:
    return any(omniglot.zip_path(data, subset).is_file() for subset in omniglot.SUBSETS)


def _evaluation_classes(
    args: argparse.Namespace, checkpoint: Checkpoint, progress: bool
) -> Selection:
    data, spec = Path(args.data), checkpoint.input_spec
    if _is_omniglot(data):
        if not args.split:
            raise ValueError(
                f"--split is required for Omniglot: one of {omniglot.EVALUATION_SPLITS}"
            )
        if args.classes:
            raise ValueError("--classes is for folder data; Omniglot's classes come from --split")
        images = omniglot.load_split(data, args.split, spec, progress=progress)
        classes = ClassSet(images, f"Omniglot {args.split}", f"the {args.split} split")
        return Selection(classes, "all", f"all {images.n_classes} classes of {args.split}")
    images, fingerprint = load_folder(data, spec, progress=progress)
    return select_folder_classes(images, data, fingerprint, checkpoint, args.classes)


def _settings(args: argparse.Namespace) -> list[tuple[EpisodeShape, bool, EpisodeFlags]]:
    """Each episode shape to evaluate, whether within-alphabet, and the flags that set it."""
    if not args.table:
        shape = EpisodeShape(args.way, args.shot, args.query)
        return [(shape, args.within_alphabet, EpisodeFlags())]
    table_flags = EpisodeFlags("the --table way", "the --table shot", "--query")
    within = [False, True] if args.within_alphabet else [False]
    return [
        (EpisodeShape(way, shot, args.query), mode, table_flags)
        for way, shot in STANDARD_SETTINGS
        for mode in within
    ]


def command_evaluate(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    progress = args.progress and not args.json
    checkpoint = load_checkpoint(args.checkpoint)
    selection = _evaluation_classes(args, checkpoint, progress)
    settings = _settings(args)
    for shape, within, episode_flags in settings:  # all of them before the slow part
        for note in check_episodes(selection.classes, shape, episode_flags, within):
            print(f"note: {note}", file=sys.stderr)
    if not args.json:
        print(f"classes: {selection.description}")
    images = selection.classes.images
    encoder = checkpoint.build_encoder(pick_device(args.device))
    embeddings = embed_imageset(encoder, images, checkpoint.input_spec)
    results: list[EvaluationResult] = []
    for shape, within, _ in settings:
        result = evaluate(
            embeddings, images, shape, args.episodes, args.seed, within, progress=progress
        )
        results.append(result)
        if not args.json:
            print(result.describe())
    summary = _summary(args, checkpoint.version, selection, results)
    if args.write_card:
        _write_card(args, summary)
    if args.json:
        print(json.dumps(summary))
    return 0


def _summary(
    args: argparse.Namespace, version: str, selection: Selection, results: list[EvaluationResult]
) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "checkpoint": str(args.checkpoint),
        "model_version": version,
        "data": str(args.data),
        "split": args.split,
        "classes": selection.name,
        "n_classes": selection.classes.images.n_classes,
        "seed": args.seed,
        "results": [r.as_dict() for r in results],
    }
    summary.update({"accuracy": results[0].accuracy, "ci95": results[0].ci95})
    return summary


def _write_card(args: argparse.Namespace, summary: dict[str, Any]) -> None:
    """Record the evaluation in the checkpoint and write ``<checkpoint>.card.json`` beside it."""
    checkpoint = load_checkpoint(args.checkpoint)
    key = args.split or f"folder-{summary['classes']}"
    checkpoint.evaluation[key] = summary["results"]
    save_checkpoint(checkpoint, args.checkpoint)
    spec = checkpoint.input_spec
    card = {
        "model_version": checkpoint.version,
        "architecture": checkpoint.encoder_config.to_dict(),
        "input": spec.to_dict(),
        "input_mode": "RGB" if spec.channels == 3 else "grayscale",
        "metric": checkpoint.metric,
        "data_fingerprint": checkpoint.data_fingerprint,
        "training_config": checkpoint.training_config,
        **{
            k: checkpoint.metadata.get(k)
            for k in (
                "seed",
                "commit",
                "training_wall_seconds",
                "episodes_trained",
                "hardware",
                "validation",
            )
        },
        "evaluation": checkpoint.evaluation,
    }
    card_path = Path(args.checkpoint).with_suffix(".card.json")
    card_path.write_text(json.dumps(card, indent=2) + "\n")


def command_data(args: argparse.Namespace) -> int:
    dest = Path(args.dest)
    report = (
        download.copy_omniglot(Path(args.source), dest)
        if args.source
        else download.download_omniglot(dest)
    )
    print("\n".join(report))
    return 0


def _add_data_command(commands: Any) -> None:
    data = commands.add_parser(
        "data",
        help="fetch and check the Omniglot data",
        description=DATA_DESCRIPTION,
        epilog=DATA_EPILOG,
        formatter_class=_formatter,
    )
    data.add_argument("dataset", choices=["omniglot"], help="the dataset to fetch")
    data.add_argument(
        "--dest", default="data/omniglot", help="directory to write into (default: %(default)s)"
    )
    data.add_argument(
        "--from",
        dest="source",
        metavar="DIR",
        help="validate and copy a local copy of the zips instead of downloading",
    )
    data.set_defaults(run=command_data)


def _add_train_command(commands: Any) -> None:
    train = commands.add_parser(
        "train",
        help="meta-train an encoder on Omniglot or on your own images",
        description=TRAIN_DESCRIPTION,
        epilog=TRAIN_EPILOG,
        formatter_class=_formatter,
    )
    train.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="a tested recipe; flags given with it override its values",
    )
    add_config_flags(train)
    train.set_defaults(run=command_train)


def _add_evaluate_command(commands: Any) -> None:
    ev = commands.add_parser(
        "evaluate",
        help="few-shot accuracy of a checkpoint over random episodes",
        description=EVALUATE_DESCRIPTION,
        epilog=EVALUATE_EPILOG,
        formatter_class=_formatter,
    )
    ev.add_argument("--checkpoint", required=True, help="the checkpoint (.pt) to evaluate")
    ev.add_argument(
        "--data",
        default=DEFAULT_DATA,
        help="Omniglot directory (the zips) or ROOT/<class>/<images> (default: %(default)s)",
    )
    ev.add_argument(
        "--split",
        choices=omniglot.EVALUATION_SPLITS,
        help="Omniglot only: which classes (vinyals-*: with rotation classes)",
    )
    ev.add_argument(
        "--classes",
        choices=CLASS_SETS,
        help="folder data: held out from training, all, or trained on (default: heldout when "
        "the checkpoint was trained on --data, else all)",
    )
    ev.add_argument("--way", type=int, default=5, help="classes per episode (default: %(default)s)")
    ev.add_argument(
        "--shot", type=int, default=1, help="support images per class (default: %(default)s)"
    )
    ev.add_argument(
        "--query", type=int, default=15, help="query images per class (default: %(default)s)"
    )
    ev.add_argument(
        "--episodes", type=int, default=1000, help="random episodes (default: %(default)s)"
    )
    ev.add_argument(
        "--within-alphabet",
        action="store_true",
        help="draw each episode's classes from one alphabet (Omniglot's harder protocol)",
    )
    ev.add_argument(
        "--seed", type=int, default=0, help="seed of the episodes (default: %(default)s)"
    )
    ev.add_argument(
        "--table",
        action="store_true",
        help="all four standard settings, 5/20-way x 1/5-shot, instead of --way/--shot",
    )
    ev.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object on stdout, and nothing else there",
    )
    ev.add_argument(
        "--write-card",
        action="store_true",
        help="store the results in the checkpoint and write <checkpoint>.card.json beside it",
    )
    ev.add_argument(
        "--device",
        default="auto",
        choices=DEVICES,
        help="where to embed (auto = CUDA when present, else CPU; default: %(default)s)",
    )
    ev.add_argument(
        "--threads", type=int, default=0, help="torch intra-op threads (default: 0 = all cores)"
    )
    ev.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="show progress bars (default: True)",
    )
    ev.set_defaults(run=command_evaluate)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The parser; ``prog`` is the name usage lines and examples show (``protonet``)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=DESCRIPTION, epilog=EPILOG, formatter_class=_formatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_data_command(commands)
    _add_train_command(commands)
    _add_evaluate_command(commands)
    return parser


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Run one command; ``argv`` defaults to ``sys.argv[1:]``. Returns the exit status."""
    args = build_parser(prog).parse_args(argv)
    try:
        return int(args.run(args))
    except (ProtonetError, ValueError, FileNotFoundError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
