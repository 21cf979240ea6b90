"""``python -m training {data,train,evaluate}``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from protonet.checkpoint import load_checkpoint, save_checkpoint
from protonet.embedding import pick_device
from protonet.errors import ProtonetError
from training import download, omniglot
from training.config import DEFAULT_DATA, PRESETS, TrainConfig, apply_preset
from training.episodes import EpisodeShape
from training.evaluate import STANDARD_SETTINGS, EvaluationResult, embed_imageset, evaluate
from training.folder import load_folder
from training.imageset import ImageSet


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`TrainConfig` field; unset flags keep the preset/default value."""
    defaults = TrainConfig()
    for spec in fields(TrainConfig):
        default = getattr(defaults, spec.name)
        if isinstance(default, bool):
            parser.add_argument(
                _flag(spec.name),
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"(default: {default})",
            )
        else:
            parser.add_argument(
                _flag(spec.name), type=type(default), default=None, help=f"(default: {default!r})"
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


def _evaluation_data(args: argparse.Namespace, spec: Any) -> ImageSet:
    data = Path(args.data)
    if (
        omniglot.zip_path(data, "background").is_file()
        or omniglot.zip_path(data, "evaluation").is_file()
    ):
        if not args.split:
            raise ValueError(
                f"--split is required for Omniglot: one of {omniglot.EVALUATION_SPLITS}"
            )
        return omniglot.load_split(data, args.split, spec, progress=not args.json)
    return load_folder(data, spec, progress=not args.json)[0]


def command_evaluate(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint = load_checkpoint(args.checkpoint)
    encoder = checkpoint.build_encoder(pick_device(args.device))
    images = _evaluation_data(args, checkpoint.input_spec)
    embeddings = embed_imageset(encoder, images, checkpoint.input_spec)
    settings = STANDARD_SETTINGS if args.table else ((args.way, args.shot),)
    results: list[EvaluationResult] = []
    for way, shot in settings:
        for within in (
            [False, True] if args.table and args.within_alphabet else [args.within_alphabet]
        ):
            result = evaluate(
                embeddings,
                images,
                EpisodeShape(way, shot, args.query),
                args.episodes,
                args.seed,
                within,
                progress=not args.json,
            )
            results.append(result)
            if not args.json:
                print(result.describe())
    summary = _summary(args, checkpoint.version, results)
    if args.write_card:
        _write_card(args, summary)
    if args.json:
        print(json.dumps(summary))
    return 0


def _summary(
    args: argparse.Namespace, version: str, results: list[EvaluationResult]
) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "checkpoint": str(args.checkpoint),
        "model_version": version,
        "data": str(args.data),
        "split": args.split,
        "seed": args.seed,
        "results": [r.as_dict() for r in results],
    }
    summary.update({"accuracy": results[0].accuracy, "ci95": results[0].ci95})
    return summary


def _write_card(args: argparse.Namespace, summary: dict[str, Any]) -> None:
    """Record the evaluation in the checkpoint and write ``<checkpoint>.card.json`` beside it."""
    checkpoint = load_checkpoint(args.checkpoint)
    key = f"{args.split or 'folder'}"
    checkpoint.evaluation[key] = summary["results"]
    save_checkpoint(checkpoint, args.checkpoint)
    card = {
        "model_version": checkpoint.version,
        "architecture": checkpoint.encoder_config.to_dict(),
        "input": checkpoint.input_spec.to_dict(),
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="fetch a dataset")
    data.add_argument("dataset", choices=["omniglot"])
    data.add_argument("--dest", default="data/omniglot", help="directory to write into")
    data.add_argument("--from", dest="source", help="copy and validate a local copy instead")
    data.set_defaults(run=command_data)

    train = commands.add_parser("train", help="meta-train an encoder")
    train.add_argument("--preset", choices=sorted(PRESETS))
    add_config_flags(train)
    train.set_defaults(run=command_train)

    ev = commands.add_parser("evaluate", help="few-shot accuracy over random episodes")
    ev.add_argument("--checkpoint", required=True)
    ev.add_argument("--data", default=DEFAULT_DATA)
    ev.add_argument("--split", choices=omniglot.EVALUATION_SPLITS)
    ev.add_argument("--way", type=int, default=5)
    ev.add_argument("--shot", type=int, default=1)
    ev.add_argument("--query", type=int, default=15)
    ev.add_argument("--episodes", type=int, default=1000)
    ev.add_argument("--within-alphabet", action="store_true")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--table", action="store_true", help="5/20-way x 1/5-shot")
    ev.add_argument("--json", action="store_true", help="end with one JSON object")
    ev.add_argument(
        "--write-card",
        action="store_true",
        help="store results in the checkpoint and write its .card.json",
    )
    ev.add_argument("--device", default="auto")
    ev.add_argument("--threads", type=int, default=0)
    ev.set_defaults(run=command_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (ProtonetError, ValueError, FileNotFoundError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
