"""The trainer's command line: ``python -m training {data,train,evaluate,calibrate}``.

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
from protonet.open_set import DEFAULT_SCORE, SCORES, RejectionCalibration
from training import download, emoji_download, omniglot
from training.calibrate import (
    ACCEPTANCES,
    calibrate,
    calibration_shots,
    validation_embeddings,
)
from training.checks import ClassSet, EpisodeFlags, check_episodes
from training.config import (
    DEFAULT_DATA,
    DEVICES,
    PICTURE_SPLITS,
    PRESETS,
    TEXT_SPLITS,
    TrainConfig,
    apply_preset,
    choices,
    flag,
    help_text,
)
from training.emoji import is_emoji_dir, load_emoji_split
from training.episodes import EpisodeShape
from training.evaluate import (
    CLASS_SETS,
    STANDARD_SETTINGS,
    Classify,
    EvaluationResult,
    OpenSetResult,
    Selection,
    embed_imageset,
    evaluate,
    evaluate_open_set,
    nearest_prototype,
    select_folder_classes,
)
from training.folder import load_folder
from training.meta_learning import (
    PROTONET,
    SNAIL,
    MetaLearner,
    SnailLearner,
    check_episode_way,
    evaluate_finetuned,
    learner_from_checkpoint,
)

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


def _evaluation_classes(
    args: argparse.Namespace, checkpoint: Checkpoint, progress: bool
) -> Selection:
    data, spec = Path(args.data), checkpoint.input_spec
    if is_emoji_dir(data):
        if args.split or args.classes:
            raise ValueError("--split and --classes are not for emoji: the test subcategories")
        classes = load_emoji_split(data, spec, "test", progress)
        description = f"{classes.origin}, held out from training and validation"
        return Selection(classes, "all", description)
    if omniglot.is_omniglot_dir(data):
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


# An episode shape to evaluate, whether within-alphabet, and the flags that set it.
Setting = tuple[EpisodeShape, bool, EpisodeFlags]


def _settings(args: argparse.Namespace) -> list[Setting]:
    """Each episode shape to evaluate, whether within-alphabet, and the flags that set it."""
    unknown = 1 if args.open_set else 0  # open-set: as many unknown classes as known ones
    if not args.table:
        shape = EpisodeShape(args.way, args.shot, args.query, unknown * args.way)
        return [(shape, args.within_alphabet, EpisodeFlags())]
    table_flags = EpisodeFlags("the --table way", "the --table shot", "--query")
    within = [False, True] if args.within_alphabet else [False]
    return [
        (EpisodeShape(way, shot, args.query, unknown * way), mode, table_flags)
        for way, shot in STANDARD_SETTINGS
        for mode in within
    ]


def _open_set_scoring(
    args: argparse.Namespace, checkpoint: Checkpoint
) -> tuple[str, RejectionCalibration | None]:
    """The score method of an open-set evaluation, and the calibration that judges it: the
    checkpoint's, where it was measured for that method."""
    if not args.open_set:
        if args.score or args.acceptance is not None:
            raise ValueError("--score and --acceptance are for --open-set evaluations")
        return DEFAULT_SCORE, None
    calibration = checkpoint.calibration
    method = args.score or (calibration.method if calibration else DEFAULT_SCORE)
    if calibration is None or calibration.method != method:
        print(
            f"note: the checkpoint holds no rejection calibration for {method}: no shares "
            "accepted/rejected (the calibrate command measures one)",
            file=sys.stderr,
        )
        return method, None
    low, high = calibration.acceptances[0], calibration.acceptances[-1]
    if args.acceptance is not None and not low <= args.acceptance <= high:
        raise ValueError(f"--acceptance must be within the calibrated {low} to {high}")
    return method, calibration


def _episode_classifier(
    args: argparse.Namespace, checkpoint: Checkpoint, settings: list[Setting]
) -> tuple[MetaLearner, int] | Classify:
    """How episodes are classified: a MAML-family learner and its fine-tuning steps, else a
    classifier of embeddings: SNAIL's network, or the nearest prototype (protonet, or
    --finetune-steps 0: as the service classifies)."""
    steps = args.finetune_steps
    if checkpoint.method == PROTONET:
        if steps:
            raise ValueError("--finetune-steps is for MAML-family checkpoints, not protonet")
        return nearest_prototype
    if checkpoint.method == SNAIL and steps:
        raise ValueError(
            "--finetune-steps: a snail checkpoint does not fine-tune: leave the flag out for "
            "its own network, or pass 0 for the nearest prototype of its embeddings (as served)"
        )
    if steps is None and checkpoint.method != SNAIL:
        steps = int(checkpoint.training_config.get("finetune_steps", 3))
    if steps == 0:
        return nearest_prototype
    if args.open_set:
        raise ValueError("--open-set scores distances to prototypes: add --finetune-steps 0")
    learner = learner_from_checkpoint(checkpoint, pick_device(args.device))
    for shape, _, _ in settings:  # all of them before the slow part
        check_episode_way(learner, shape.n_way)
    if isinstance(learner, SnailLearner):
        return learner.eval().classify
    return learner, int(steps or 0)


def command_evaluate(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    progress = args.progress and not args.json
    checkpoint = load_checkpoint(args.checkpoint, modality=None)
    if checkpoint.modality == "text":
        return command_evaluate_text(args, checkpoint, progress)
    if args.within_train:
        raise ValueError(f"--within-train is for text checkpoints; {args.checkpoint} is not")
    method, calibration = _open_set_scoring(args, checkpoint)
    selection = _evaluation_classes(args, checkpoint, progress)
    settings = _settings(args)
    notes = [  # all of them before the slow part
        note
        for shape, within, episode_flags in settings
        for note in check_episodes(selection.classes, shape, episode_flags, within)
    ]
    for note in dict.fromkeys(notes):  # settings of another shot repeat a note
        print(f"note: {note}", file=sys.stderr)
    if not args.json:
        print(f"classes: {selection.description}")
    images = selection.classes.items
    classifier = _episode_classifier(args, checkpoint, settings)
    if not isinstance(classifier, tuple):  # fine-tuned episodes embed their own images
        encoder = checkpoint.build_encoder(pick_device(args.device))
        embeddings = embed_imageset(encoder, images, checkpoint.input_spec, progress=progress)
    results: list[EvaluationResult | OpenSetResult] = []
    for shape, within, _ in settings:
        result: EvaluationResult | OpenSetResult
        if isinstance(classifier, tuple):  # MAML family: fine-tuned on each episode's support
            learner, steps = classifier
            result = evaluate_finetuned(
                learner,
                images,
                checkpoint.input_spec,
                shape,
                args.episodes,
                args.seed,
                steps,
                within,
                progress,
            )
        elif args.open_set:
            result = evaluate_open_set(
                embeddings,
                images,
                shape,
                method,
                calibration,
                args.acceptance,
                args.episodes,
                args.seed,
                within,
                progress,
            )
        else:
            result = evaluate(
                embeddings,
                images,
                shape,
                args.episodes,
                args.seed,
                within,
                progress=progress,
                classify=classifier,
            )
        results.append(result)
        if not args.json:
            print(result.describe())
    summary = _summary(args, checkpoint.version, selection, results)
    if args.write_card:
        _record_evaluation(args, summary)
    if args.json:
        print(json.dumps(summary))
    return 0


def command_evaluate_text(args: argparse.Namespace, checkpoint: Checkpoint, progress: bool) -> int:
    """Banking77 episodes over (by default) the held-out intents, queries from the test file;
    with --table, 5-way and all-way at 1, 5 and 8 shots, and all 77 intents at 8 shots."""
    from training.text_evaluate import evaluate_text_checkpoint

    image_only = {"--split": args.split, "--within-alphabet": args.within_alphabet}
    for name, given in image_only.items():
        if given:
            raise ValueError(f"{name} is for image checkpoints; {args.checkpoint} is text")
    if args.within_train:
        return command_evaluate_within_train(args, checkpoint, progress)
    if args.open_set:
        return command_evaluate_text_open_set(args, checkpoint, progress)
    shapes = None if args.table else [EpisodeShape(args.way, args.shot, args.query)]
    classes = args.classes or "heldout"
    evaluation = evaluate_text_checkpoint(
        checkpoint, Path(args.data), classes, shapes, args.episodes, args.seed, progress
    )
    for note in evaluation.notes:
        print(f"note: {note}", file=sys.stderr)
    results = [r.as_dict() for r in evaluation.episodes]
    base_results = [r.as_dict() for r in evaluation.base_episodes]
    all_intents = [r.as_dict() for r in evaluation.all_intents]
    summary: dict[str, Any] = {
        "checkpoint": str(args.checkpoint),
        "model_version": checkpoint.version,
        "modality": "text",
        "data": str(args.data),
        "classes": evaluation.classes,
        "n_classes": len(evaluation.intents),
        "seed": args.seed,
        "results": results,
        "base_results": base_results,
        "all_intents": all_intents,
        "accuracy": results[0]["accuracy"],
        "ci95": results[0]["ci95"],
    }
    if args.write_card:
        key = f"banking77-{evaluation.classes}"
        checkpoint.evaluation[key] = results
        checkpoint.evaluation[f"{key}-frozen-base"] = base_results
        if all_intents:
            checkpoint.evaluation["banking77-all-intents"] = all_intents
        save_checkpoint(checkpoint, args.checkpoint)
        write_card(checkpoint, Path(args.checkpoint))
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"intents: {evaluation.classes} ({len(evaluation.intents)}), queries from the test file")
    lines = [f"head: {r.describe()}" for r in evaluation.episodes]
    lines += [f"frozen base: {r.describe()}" for r in evaluation.base_episodes]
    print("\n".join(lines + [r.describe() for r in evaluation.all_intents]))
    return 0


def command_evaluate_text_open_set(
    args: argparse.Namespace, checkpoint: Checkpoint, progress: bool
) -> int:
    """--open-set on a text checkpoint: 10 of its held-out intents out of scope, every other
    intent registered with --shot train texts, every test text queried (--episodes draws)."""
    from training.text_evaluate import embed_split, evaluate_text_open_set

    if args.table or args.classes:
        raise ValueError("--open-set on text has its own setting: leave out --table and --classes")
    method, calibration = _open_set_scoring(args, checkpoint)
    if calibration is None:
        raise ValueError(
            f"{args.checkpoint} holds no rejection calibration for {method}: run protonet "
            f"calibrate --checkpoint {args.checkpoint} --data {args.data} --write first"
        )
    train = embed_split(checkpoint, Path(args.data), "train", None, progress)
    test = embed_split(checkpoint, Path(args.data), "test", None, progress)
    result = evaluate_text_open_set(
        train, test, checkpoint, calibration, args.acceptance, args.shot, args.episodes, args.seed
    )
    if args.write_card:
        checkpoint.evaluation["banking77-open-set"] = [result.as_dict()]
        save_checkpoint(checkpoint, args.checkpoint)
        write_card(checkpoint, Path(args.checkpoint))
    if args.json:
        summary = {"checkpoint": str(args.checkpoint), "model_version": checkpoint.version}
        print(json.dumps({**summary, "open_set": result.as_dict()}))
    else:
        print(result.describe())
    return 0


def _summary(
    args: argparse.Namespace,
    version: str,
    selection: Selection,
    results: list[EvaluationResult | OpenSetResult],
) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "checkpoint": str(args.checkpoint),
        "model_version": version,
        "data": str(args.data),
        "split": args.split,
        "classes": selection.name,
        "n_classes": selection.classes.items.n_classes,
        "seed": args.seed,
        "open_set": args.open_set,
        "results": [r.as_dict() for r in results],
    }
    summary.update({"accuracy": results[0].accuracy, "ci95": results[0].ci95})
    if isinstance(results[0], OpenSetResult):
        summary.update({"score": results[0].score, "auroc": results[0].auroc})
    return summary


def _record_evaluation(args: argparse.Namespace, summary: dict[str, Any]) -> None:
    """Record the evaluation in the checkpoint and write ``<checkpoint>.card.json`` beside it."""
    checkpoint = load_checkpoint(args.checkpoint)
    key = args.split or f"folder-{summary['classes']}"
    checkpoint.evaluation[key + ("-open-set" if args.open_set else "")] = summary["results"]
    save_checkpoint(checkpoint, args.checkpoint)
    write_card(checkpoint, Path(args.checkpoint))


def command_evaluate_within_train(
    args: argparse.Namespace, checkpoint: Checkpoint, progress: bool
) -> int:
    """--within-train: the train-file-only criterion for choosing between text models (reads
    train.csv, never test.csv)."""
    from training.text_evaluate import embed_split, evaluate_within_train

    if args.table or args.classes:
        raise ValueError("--within-train has its own setting: leave out --table and --classes")
    train = embed_split(checkpoint, Path(args.data), "train", None, progress)
    results = evaluate_within_train(train, checkpoint, seed=args.seed)
    if args.write_card:
        checkpoint.evaluation["banking77-within-train"] = [r.as_dict() for r in results]
        save_checkpoint(checkpoint, args.checkpoint)
        write_card(checkpoint, Path(args.checkpoint))
    if args.json:
        print(
            json.dumps(
                {
                    "checkpoint": str(args.checkpoint),
                    "model_version": checkpoint.version,
                    "within_train": [r.as_dict() for r in results],
                }
            )
        )
    else:
        print("\n".join(r.describe() for r in results))
    return 0


def write_card(checkpoint: Checkpoint, checkpoint_path: Path) -> Path:
    """``<checkpoint>.card.json`` beside the checkpoint: what it is, how it was trained, its
    evaluations and its rejection calibration."""
    spec, text = checkpoint.input_spec, checkpoint.text_spec
    card = {
        "model_version": checkpoint.version,
        "modality": checkpoint.modality,
        "architecture": checkpoint.encoder_config.to_dict(),
        "input": text.to_dict() if text else spec.to_dict(),
        "input_mode": "text" if text else "RGB" if spec.channels == 3 else "grayscale",
        "metric": checkpoint.metric,
        "data_fingerprint": checkpoint.data_fingerprint,
        "training_config": checkpoint.training_config,
        **{
            k: checkpoint.metadata.get(k)
            for k in (
                "method",
                "seed",
                "commit",
                "training_wall_seconds",
                "episodes_trained",
                "hardware",
                "validation",
                "intents",
            )
            if k in checkpoint.metadata or k != "intents"
        },
        "evaluation": checkpoint.evaluation,
        "rejection": checkpoint.calibration.to_dict() if checkpoint.calibration else None,
    }
    card_path = checkpoint_path.with_suffix(".card.json")
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return card_path


def command_calibrate(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if min(args.way, args.query, args.episodes) < 1:
        raise ValueError("--way, --query and --episodes must all be >= 1")
    if not ACCEPTANCES[0] <= args.acceptance <= ACCEPTANCES[-1]:
        raise ValueError(
            f"--acceptance must be between {ACCEPTANCES[0]} and {ACCEPTANCES[-1]}, the "
            f"calibrated range; not {args.acceptance}"
        )
    progress = args.progress and not args.json
    checkpoint = load_checkpoint(args.checkpoint, modality=None)
    classes, embeddings = validation_embeddings(checkpoint, Path(args.data), args.device, progress)
    measured = calibrate(
        embeddings,
        classes,
        args.score,
        args.way,
        args.query,
        args.episodes,
        args.seed,
        calibration_shots(checkpoint),
        progress=progress,
    )
    for note in measured.notes:
        print(f"note: {note}", file=sys.stderr)
    rejection = replace(measured.rejection, default_acceptance=args.acceptance)
    if args.write or args.write_card:
        checkpoint.calibration = rejection
        save_checkpoint(checkpoint, args.checkpoint)
    card = write_card(checkpoint, Path(args.checkpoint)) if args.write_card else None
    if args.json:
        written = args.write or args.write_card
        print(json.dumps(_calibration_summary(args, checkpoint, rejection, written)))
        return 0
    print(_threshold_table(rejection))
    if args.write or args.write_card:
        where = f" and {card}" if card else ""
        print(f"written to {args.checkpoint}{where} (model version {checkpoint.version})")
    return 0


def _calibration_summary(
    args: argparse.Namespace, checkpoint: Checkpoint, rejection: RejectionCalibration, written: bool
) -> dict[str, Any]:
    return {
        "checkpoint": str(args.checkpoint),
        "model_version": checkpoint.version,
        "data": str(args.data),
        "way": args.way,
        "episodes": args.episodes,
        "seed": args.seed,
        "written": written,
        "rejection": rejection.to_dict(),
    }


def _threshold_table(rejection: RejectionCalibration) -> str:
    """The thresholds as a text table: a row per shot count, a column per acceptance."""
    header = "shot" + "".join(f"{100 * a:>9g}%" for a in rejection.acceptances)
    rows = [
        f"{shot:>4}" + "".join(f"{t:>10.3f}" for t in row)
        for shot, row in zip(rejection.shots, rejection.thresholds, strict=True)
    ]
    return "\n".join(
        [
            f"rejection thresholds of {rejection.method} (above them a query is unknown), by "
            f"shot count and known acceptance (default {100 * rejection.default_acceptance:g}%):",
            header,
            *rows,
            f"measured on {rejection.source}",
        ]
    )


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
        "the checkpoint was trained on --data, else all); a text checkpoint: its held-out, all "
        "or meta-training intents (default: heldout)",
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
        "--within-train",
        action="store_true",
        help="text: the criterion for choosing between models, from the train file alone: "
        "8 texts per intent for all intents (10 seeded draws), and as queries every other "
        "train text of the validation and held-out intents",
    )
    ev.add_argument(
        "--open-set",
        action="store_true",
        help="add queries of --way unknown classes (text: 10 held-out intents' test texts "
        "against all other intents): AUROC of known against unknown, and the shares "
        "accepted/rejected at the checkpoint's rejection threshold",
    )
    ev.add_argument(
        "--score",
        choices=sorted(SCORES),
        help="--open-set: the unknown-ness score (default: the calibration's, else "
        f"{DEFAULT_SCORE})",
    )
    ev.add_argument(
        "--acceptance",
        type=float,
        help="--open-set: the known acceptance whose threshold judges the queries (default: "
        "the calibration's default, 0.95)",
    )
    ev.add_argument(
        "--finetune-steps",
        type=int,
        help="MAML-family checkpoints: inner-loop steps on each episode's support set "
        "(default: the checkpoint's --finetune-steps); 0, for snail checkpoints too: nearest "
        "prototype of the backbone's embeddings, as the service classifies (snail's default: "
        "its own network)",
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
    _add_runtime_flags(ev)
    ev.set_defaults(run=command_evaluate)


def _add_runtime_flags(parser: argparse.ArgumentParser) -> None:
    """--device, --threads and --progress, as evaluate and calibrate share them."""
    parser.add_argument(
        "--device",
        default="auto",
        choices=DEVICES,
        help="where to embed (auto = CUDA when present, else CPU; default: %(default)s)",
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch intra-op threads (default: 0 = all cores)"
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="show progress bars (default: True)",
    )


def _add_calibrate_command(commands: Any) -> None:
    cal = commands.add_parser(
        "calibrate",
        help="measure a checkpoint's rejection thresholds for unknown inputs",
        description=CALIBRATE_DESCRIPTION,
        epilog=CALIBRATE_EPILOG,
        formatter_class=_formatter,
    )
    cal.add_argument("--checkpoint", required=True, help="the checkpoint (.pt) to calibrate")
    cal.add_argument(
        "--data",
        default=DEFAULT_DATA,
        help="the data the checkpoint was trained on: Omniglot directory or ROOT/<class>/"
        "<images>; only its validation classes are read (default: %(default)s)",
    )
    cal.add_argument(
        "--score",
        default=DEFAULT_SCORE,
        choices=sorted(SCORES),
        help="the unknown-ness score to calibrate (default: %(default)s)",
    )
    cal.add_argument(
        "--way", type=int, default=5, help="classes per episode (default: %(default)s)"
    )
    cal.add_argument(
        "--query",
        type=int,
        default=15,
        help="known queries per class, fewer where a class holds fewer images beside the "
        "support (default: %(default)s)",
    )
    cal.add_argument(
        "--episodes",
        type=int,
        default=500,
        help="episodes per shot count (default: %(default)s)",
    )
    cal.add_argument(
        "--acceptance",
        type=float,
        default=0.95,
        help="the default known acceptance, whose thresholds the service applies unless told "
        "otherwise (default: %(default)s)",
    )
    cal.add_argument(
        "--seed", type=int, default=0, help="seed of the episodes (default: %(default)s)"
    )
    cal.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object on stdout, and nothing else there",
    )
    cal.add_argument("--write", action="store_true", help="store the calibration in the checkpoint")
    cal.add_argument(
        "--write-card",
        action="store_true",
        help="store it in the checkpoint and rewrite <checkpoint>.card.json beside it",
    )
    _add_runtime_flags(cal)
    cal.set_defaults(run=command_calibrate)


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
