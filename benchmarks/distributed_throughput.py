"""Training throughput with one process and with two under torchrun (a benchmark, not a test).

Trains the bundled model's recipe (``--preset omniglot-lake``: 60-way 1-shot 5-query
episodes) for ``--steps`` optimizer steps, three ways on the same cores:

* 1 process, 1 thread;
* 1 process, ``--threads`` threads (all cores by default);
* ``--processes`` processes under ``torchrun``, 1 thread each (gloo; each step averages one
  episode per process).

Episodes per second are the checkpoint's ``episodes_trained / training_wall_seconds``: the
training loop alone (startup, data loading and the one validation at the end excluded).

    python benchmarks/distributed_throughput.py [--steps 60] [--processes 2] [--threads 2]
    python benchmarks/distributed_throughput.py --smoke    # 2 steps per run (tests)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import smoke  # noqa: E402
from benchmarks.machine import machine  # noqa: E402
from protonet.checkpoint import load_checkpoint  # noqa: E402

# --smoke: 20 characters of a training alphabet and of a held-out one (the lake split's).
SAMPLE = {"Alphabet_of_the_Magi": 20, "Bengali": 20}


def train(
    out: Path, data: Path, processes: int, threads: int, args: argparse.Namespace
) -> tuple[float, float]:
    """(episodes per second, seconds) of one short run of the preset into ``out``."""
    flags = ["--preset", "omniglot-lake", "--data", str(data), "--out", str(out)]
    flags += ["--episodes", str(args.steps), "--val-every", str(args.steps)]
    flags += ["--val-episodes", str(args.val_episodes), "--threads", str(threads)]
    flags += ["--no-progress"]
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone"]
        launcher += [f"--nproc-per-node={processes}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [*launcher, "-m", "training", "train", *flags]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}")
    metadata = load_checkpoint(out / "best.pt").metadata
    seconds = float(metadata["training_wall_seconds"])
    return metadata["episodes_trained"] / seconds, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per run")
    parser.add_argument("--processes", type=int, default=2, help="torchrun processes")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--val-episodes", type=int, default=10, help="the one validation")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "omniglot")
    args = smoke.parse_args(parser, {"steps": 2, "val_episodes": 2})
    runs = [
        ("1 process, 1 thread", 1, 1),
        (f"1 process, {args.threads} threads", 1, args.threads),
        (f"{args.processes} processes (torchrun, gloo), 1 thread each", args.processes, 1),
    ]
    print(f"{machine()}; {args.steps} steps of --preset omniglot-lake (60-way 1-shot)")
    results = []
    with (
        tempfile.TemporaryDirectory() as scratch,
        smoke.omniglot(args.data, args.smoke, SAMPLE) as data,
    ):
        for i, (name, processes, threads) in enumerate(runs):
            rate, seconds = train(Path(scratch) / str(i), data, processes, threads, args)
            results.append(rate)
            print(f"{name:<45} {rate:6.2f} episodes/s ({seconds:.1f} s)", flush=True)
    print(
        f"ratio, {args.processes} processes / 1 process 1 thread: {results[2] / results[0]:.2f}; "
        f"/ 1 process {args.threads} threads: {results[2] / results[1]:.2f}"
    )


if __name__ == "__main__":
    main()
