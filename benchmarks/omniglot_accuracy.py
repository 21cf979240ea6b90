"""Reproduce the README's Omniglot accuracy tables (a benchmark, not a test).

    python benchmarks/omniglot_accuracy.py            # evaluate existing checkpoints
    python benchmarks/omniglot_accuracy.py --train    # train both presets first (up to 88 min each)
    python benchmarks/omniglot_accuracy.py --smoke    # 5 episodes on 20 characters (tests)

Table 1: the Vinyals split (test classes, with rotations), the committed model
``models/omniglot-vinyals-conv4.pt`` (``--train``: a fresh ``runs/omniglot-vinyals/best.pt``).
Table 2: the bundled model (``models/omniglot-conv4.pt``, trained on images_background only)
on images_evaluation, random and within-alphabet episodes. 1000 episodes per cell.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import smoke  # noqa: E402
from protonet.checkpoint import load_checkpoint  # noqa: E402

PAPER = {(5, 1): 0.988, (5, 5): 0.997, (20, 1): 0.960, (20, 5): 0.989}
# --smoke: Omniglot with 20 characters of an alphabet of the Vinyals test classes (both tables;
# the vinyals-* splits read both zips, hence a background character too).
SAMPLE = {"Keble": 20, "Greek": 1}


def run_cli(*args: str) -> dict:
    command = [sys.executable, "-m", "training", *args]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def train(preset: str, minutes: float) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "training",
            "train",
            "--preset",
            preset,
            "--max-minutes",
            str(minutes),
        ],
        cwd=ROOT,
        check=True,
    )


def evaluate(
    checkpoint: Path, data: Path, split: str, within: bool, args: argparse.Namespace
) -> list[dict]:
    args = [
        "evaluate",
        "--checkpoint",
        str(checkpoint),
        "--data",
        str(data),
        "--split",
        split,
        "--table",
        "--episodes",
        str(args.episodes),
        "--threads",
        str(args.threads),
        "--json",
    ]
    return run_cli(*args, *(["--within-alphabet"] if within else []))["results"]


def describe(checkpoint: Path) -> str:
    meta = load_checkpoint(checkpoint).metadata
    minutes = meta.get("training_wall_seconds", 0) / 60
    return (
        f"{checkpoint}: {meta.get('episodes_trained')} episodes, {minutes:.1f} min training "
        f"wall time on {meta.get('hardware')}, precision {meta.get('precision')}"
    )


def cell(result: dict) -> str:
    return f"{100 * result['accuracy']:.2f} ± {100 * result['ci95']:.2f}"


def vinyals_table(results: list[dict]) -> str:
    rows = ["| setting | ours (%) | paper (%) | reached |", "|---|---|---|---|"]
    for r in results:
        paper = PAPER[(r["way"], r["shot"])]
        rows.append(
            f"| {r['way']}-way {r['shot']}-shot | {cell(r)} | {100 * paper:.1f} | "
            f"{'yes' if r['accuracy'] >= paper else 'no'} |"
        )
    return "\n".join(rows)


def bundled_table(results: list[dict]) -> str:
    by_key = {(r["way"], r["shot"], r["within_alphabet"]): r for r in results}
    rows = ["| setting | random episodes (%) | within-alphabet (%) |", "|---|---|---|"]
    for way, shot in PAPER:
        rows.append(
            f"| {way}-way {shot}-shot | {cell(by_key[(way, shot, False)])} | "
            f"{cell(by_key[(way, shot, True)])} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "omniglot")
    parser.add_argument("--train", action="store_true", help="train both presets first")
    parser.add_argument(
        "--minutes", type=float, default=88.0, help="training budget per model (the target: 90)"
    )
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--vinyals", default=str(ROOT / "models/omniglot-vinyals-conv4.pt"))
    parser.add_argument("--bundled", default=str(ROOT / "models/omniglot-conv4.pt"))
    parser.add_argument("--threads", type=int, default=0, help="evaluate's (0: all cores)")
    args = smoke.parse_args(parser, {"episodes": 5, "threads": 1})
    if args.train:
        train("omniglot-vinyals", args.minutes)
        train("omniglot-lake", args.minutes)
        args.vinyals = str(ROOT / "runs/omniglot-vinyals/best.pt")
        args.bundled = str(ROOT / "runs/omniglot-lake/best.pt")
    for name, path in (("vinyals", args.vinyals), ("bundled", args.bundled)):
        if not Path(path).is_file():
            sys.exit(f"{name} checkpoint {path} not found: run with --train, or pass --{name}")
    with smoke.omniglot(args.data, args.smoke, SAMPLE) as data:
        vinyals = evaluate(Path(args.vinyals), data, "vinyals-test", False, args)
        bundled = evaluate(Path(args.bundled), data, "evaluation", True, args)
    print(f"## Vinyals split, test classes ({args.episodes} episodes, 15 queries)\n")
    print(describe(Path(args.vinyals)) + "\n")
    print(vinyals_table(vinyals) + "\n")
    print(f"## Bundled model on images_evaluation ({args.episodes} episodes, 15 queries)\n")
    print(describe(Path(args.bundled)) + "\n")
    print(bundled_table(bundled))


if __name__ == "__main__":
    main()
