"""The trainer's command line: ``python -m training {data,train,evaluate,calibrate}``.

:func:`main` takes the program name, so a console script (``protonet train ...``) shows its
own name in usage lines and examples. Flags come from typed fields (``TrainConfig``,
``EvaluateConfig``, ``CalibrateConfig``); what the commands do lives beside what they use
(``training/evaluate.py``, ``text_evaluate.py``, ``calibrate.py``, ``card.py``).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from protonet.checkpoint import load_checkpoint
from protonet.errors import ProtonetError
from training import download, emoji_download
from training.calibrate import CalibrateConfig, run_calibrate
from training.config import (
    PICTURE_SPLITS,
    PRESETS,
    TEXT_SPLITS,
    TrainConfig,
    apply_preset,
    choices,
    flag,
    help_text,
)
from training.evaluate import EvaluateConfig, run_evaluate

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

PROG = "python -m training"

DESCRIPTION = """\
Train and evaluate few-shot classifiers of images and texts (Prototypical Networks; MAML-family
and SNAIL baselines): fetch Omniglot or the emoji pictures, meta-train an encoder on Omniglot or
on your own folder of images, or a head over a frozen base on the emoji pictures or Banking77's
intents, measure a checkpoint's few-shot accuracy over random episodes (and how well it tells
unknown classes apart), and calibrate its rejection of unknown inputs."""

EPILOG = """\
examples:
  %(prog)s data omniglot --dest data/omniglot
  %(prog)s train --preset omniglot-lake --data data/omniglot
  %(prog)s train --split folder --data ROOT --out runs/mine --way 5 --shot 5
  %(prog)s evaluate --checkpoint runs/mine/best.pt --data ROOT --way 2
  %(prog)s calibrate --checkpoint runs/mine/best.pt --data ROOT --write-card

'%(prog)s COMMAND --help' describes a command and all of its flags."""

DATA_DESCRIPTION = """\
omniglot: the Omniglot zips (images_background.zip, images_evaluation.zip) and the Vinyals et
al. split files, checked against their published MD5 sums. emoji: the pictures model's data
from the npm registry (emoji-datasource-google and -twitter 16.0.0, twelve @iconify-json emoji
sets), each tarball checked against a pinned sha256, unpacked into what the trainer reads and
written whole or not at all. With --from, validate a local copy (layout and counts; for emoji
also a folder of the npm tarballs) and copy it."""

DATA_EPILOG = """\
examples:
  %(prog)s omniglot --dest data/omniglot                       # download (needs internet)
  %(prog)s omniglot --from ../shared/data/omniglot --dest data/omniglot
  %(prog)s emoji --dest data/emoji                             # download (needs internet)
  %(prog)s emoji --from ../shared/data/emoji --dest data/emoji"""

TRAIN_DESCRIPTION = """\
Meta-train a Conv-4 encoder on few-shot episodes and keep the checkpoint with the best
validation accuracy. Data: Omniglot (--split lake or vinyals) or your own images (--split
folder --data ROOT, with ROOT/<class name>/<image files>; --val-fraction of the classes are
held out for validation). Every setting is checked against the data before the first
episode. A run writes best.pt, resume_state.pt, metrics.jsonl, learning_curve.png and
config.json into --out; an --out that already holds a run needs --resume or --overwrite.
Text: --split banking77 --data DIR meta-trains a head over the frozen all-MiniLM-L6-v2
sentence encoder on 40 of Banking77's intents (10 more validate, 27 are held out; the base
embeds every text once, cached). Defaults below are without --preset; a preset sets a tested
recipe, and flags override it."""

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
  %(prog)s --split folder --data ROOT --out runs/mine --way 5 --shot 5 --overwrite
  # the bundled text intent head (Banking77; minutes on one core once the texts are embedded)
  %(prog)s --preset banking77-minilm --threads 1"""

EVALUATE_DESCRIPTION = """\
Few-shot accuracy of a checkpoint: the mean over random episodes, with a 95% confidence
interval. Omniglot: --data DIR --split NAME. Emoji (a picture checkpoint): --data DIR alone,
the test subcategories. Your own images: --data ROOT alone; when the
checkpoint was trained on ROOT, evaluation uses the classes held out from training by default
(--classes). Each image is embedded once and the episodes reuse the embeddings.
--open-set adds queries of --way unknown classes (--query images each, no support;
within-alphabet, from the known classes' alphabet, so only alphabets with 2 x --way classes
take part) and reports the AUROC of known against unknown queries by their unknown-ness
--score and, where the checkpoint holds a rejection calibration (the calibrate command), the
shares of known queries accepted and of unknown ones rejected at its threshold.
A text checkpoint (Banking77): episodes over its held-out intents (--classes), support from
the train file and queries from the test file, for the head and the frozen base; --table runs
5-way and all-way at 1, 5 and 8 shots, and all 77 intents at 8 shots (10 draws, the whole test
file) for the head, the base's plain prototypes and the base with logistic regression.
--open-set on a text checkpoint: per draw (--episodes), 10 of its held-out intents are out of
scope and all others registered with --shot train texts; every test text is queried: AUROC,
and at the calibration's threshold (as calibrated, and scaled to the collection as the service
does) the known texts accepted, the unknown ones rejected and the in-scope accuracy."""

EVALUATE_EPILOG = """\
examples:
  %(prog)s --checkpoint models/omniglot-conv4.pt --data data/omniglot --split evaluation --table
  %(prog)s --checkpoint runs/mine/best.pt --data ROOT --way 2 --shot 5
  %(prog)s --checkpoint runs/mine/best.pt --data NEW_CLASSES --way 5 --json
  %(prog)s --checkpoint models/omniglot-conv4.pt --split evaluation --open-set --table
  %(prog)s --checkpoint models/banking77-minilm.pt --data ../shared/data/banking77 --table
  %(prog)s --checkpoint models/banking77-minilm.pt --data ../shared/data/banking77 \
      --open-set --shot 8
  %(prog)s --checkpoint models/pictures-mobilenetv2.pt --data ../shared/data/emoji --query 1"""

CALIBRATE_DESCRIPTION = """\
Measure where the unknown-ness score of KNOWN queries falls, on the checkpoint's own
validation classes (those held out from training: the lake split's validation alphabets of
images_background, vinyals-val, or a folder's held-out classes as the checkpoint records them;
a text checkpoint: its validation intents' texts in Banking77's train.csv; never the classes
accuracy is reported on), in closed-set episodes for 1, 2, 3, 5 and 10 shots (text: 8 too;
those the data allows). The thresholds, one per shot count at known acceptances from
80% to 99.9%, are what the service rejects unknown inputs by: at 95% acceptance about 5% of
inputs of a known class are rejected. --write stores them in the checkpoint (the weights and
their version are unchanged); --write-card also rewrites <checkpoint>.card.json."""

CALIBRATE_EPILOG = """\
examples:
  %(prog)s --checkpoint models/omniglot-conv4.pt --data data/omniglot --write-card
  %(prog)s --checkpoint runs/mine/best.pt --data ROOT --write
  %(prog)s --checkpoint models/omniglot-conv4.pt --data data/omniglot --way 20 --json
  %(prog)s --checkpoint models/banking77-minilm.pt --data ../shared/data/banking77 --write-card"""


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


def add_option_flags(parser: argparse.ArgumentParser, options: type[DataclassInstance]) -> None:
    """One flag per field of a command's options (:func:`training.config.option`), in the
    fields' order: a bool defaulting to False is a switch, one defaulting to True has --no-X."""
    for spec in fields(options):
        meta, default = spec.metadata, spec.default
        kwargs: dict[str, Any] = {"help": meta["help"]}
        if isinstance(default, bool):
            action = argparse.BooleanOptionalAction if default else "store_true"
            kwargs |= {"action": action} | ({"default": True} if default else {})
        else:
            kwargs |= {"type": meta["kind"] or type(default), "default": default}
            kwargs |= {"choices": meta["choices"] or None, "required": meta["required"]}
        parser.add_argument(flag(spec.name), **kwargs)


OptionsT = TypeVar("OptionsT", bound="DataclassInstance")


def options_from_args(args: argparse.Namespace, options: type[OptionsT]) -> OptionsT:
    """A command's options, from the flags :func:`add_option_flags` made."""
    return options(**{spec.name: getattr(args, spec.name) for spec in fields(options)})


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    config = apply_preset(TrainConfig(), args.preset)
    overrides = {
        f.name: getattr(args, f.name)
        for f in fields(TrainConfig)
        if getattr(args, f.name) is not None
    }
    return replace(config, **overrides)


def command_train(args: argparse.Namespace) -> int:
    from training.picture_trainer import PictureTrainer  # heavy imports only when training
    from training.text_trainer import TextTrainer
    from training.trainer import Trainer

    config = config_from_args(args)
    if config.split in TEXT_SPLITS:
        trainer: Trainer = TextTrainer(config)
    else:
        trainer = PictureTrainer(config) if config.split in PICTURE_SPLITS else Trainer(config)
    best = trainer.train()
    if not trainer.dist.is_main:  # under torchrun: rank 0 reports
        return 0
    checkpoint = load_checkpoint(best, modality=None)
    validation = checkpoint.metadata["validation"]
    print(
        f"best checkpoint: {best} (version {checkpoint.version}); validation "
        f"{validation['way']}-way {validation['shot']}-shot "
        f"{100 * validation['accuracy']:.2f}% ± {100 * validation['ci95']:.2f}%"
    )
    return 0


# Each dataset's (download into DEST, copy from a local DIR to DEST).
DATASETS = {
    "omniglot": (download.download_omniglot, download.copy_omniglot),
    "emoji": (emoji_download.download_emoji, emoji_download.copy_emoji),
}


def command_data(args: argparse.Namespace) -> int:
    dest = Path(args.dest or f"data/{args.dataset}")
    fetch, copy = DATASETS[args.dataset]
    report = copy(Path(args.source), dest) if args.source else fetch(dest)
    print("\n".join(report))
    return 0


def _add_data_command(commands: Any) -> None:
    data = commands.add_parser(
        "data",
        help="fetch and check a dataset: Omniglot or the emoji pictures",
        description=DATA_DESCRIPTION,
        epilog=DATA_EPILOG,
        formatter_class=_formatter,
    )
    data.add_argument("dataset", choices=sorted(DATASETS), help="the dataset to fetch")
    data.add_argument(
        "--dest", help="directory to write into (default: data/DATASET, e.g. data/emoji)"
    )
    data.add_argument(
        "--from",
        dest="source",
        metavar="DIR",
        help="validate and copy a local copy instead of downloading (Omniglot: the zips; emoji: "
        "the finished folder or the npm tarballs)",
    )
    data.set_defaults(run=command_data)


def _add_train_command(commands: Any) -> None:
    train = commands.add_parser(
        "train",
        help="meta-train a model: Omniglot, your own images, Banking77 intents or emoji pictures",
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
    add_option_flags(ev, EvaluateConfig)
    ev.set_defaults(run=lambda args: run_evaluate(options_from_args(args, EvaluateConfig)))


def _add_calibrate_command(commands: Any) -> None:
    cal = commands.add_parser(
        "calibrate",
        help="measure a checkpoint's rejection thresholds for unknown inputs",
        description=CALIBRATE_DESCRIPTION,
        epilog=CALIBRATE_EPILOG,
        formatter_class=_formatter,
    )
    add_option_flags(cal, CalibrateConfig)
    cal.set_defaults(run=lambda args: run_calibrate(options_from_args(args, CalibrateConfig)))


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The parser; ``prog`` is the name usage lines and examples show (``protonet``)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=DESCRIPTION, epilog=EPILOG, formatter_class=_formatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_data_command(commands)
    _add_train_command(commands)
    _add_evaluate_command(commands)
    _add_calibrate_command(commands)
    return parser


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Run one command; ``argv`` defaults to ``sys.argv[1:]``. Returns the exit status: 2
    with one line ``error: <message>`` on stderr for anything the user can fix (bad settings
    or data, a missing or unreadable file, a failed download), not a traceback."""
    args = build_parser(prog).parse_args(argv)
    try:
        return int(args.run(args))
    except (ProtonetError, ValueError, OSError, KeyError) as error:
        print(f"error: {error_message(error)}", file=sys.stderr)
        return 2


def error_message(error: Exception) -> str:
    """The message of ``error`` as a user reads it (``str(KeyError)`` quotes it)."""
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    return str(error)
