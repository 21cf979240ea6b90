"""Every benchmark script runs in smoke mode (benchmarks/smoke.py): ``python benchmarks/X.py
--smoke`` exits 0 and prints its result lines. The scripts are found by listing the folder, so a
new one fails here until it has a smoke mode and an entry in ``SMOKES``.

The patterns check that each table or line is there with numbers in it, never what the numbers
are (they mean nothing at smoke sizes), except where a number is the code's behaviour rather
than a timing: an answer's status, a stale read, a lost write."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks import smoke
from tests.conftest import REPO_ROOT, SHARED_DATA, require_path

BENCHMARKS = REPO_ROOT / "benchmarks"
HELPERS = {"machine.py", "smoke.py"}  # imported by the scripts, not run on their own
NUMBER = r"[\d,.]+"
GAIN = rf" \| [+-]{NUMBER} ± {NUMBER}"  # a table cell: a difference and its interval


@dataclass(frozen=True)
class Smoke:
    lines: tuple[str, ...]  # regular expressions, each matching a whole line of the output
    data: str | None = None  # what it reads under ../shared/data
    postgres: bool = False  # it starts replicas on PostgreSQL
    wrk: bool = False  # it drives the server with wrk (make wrk)


SMOKES = {
    "adaptation.py": Smoke(
        (
            r"\| Banking77, 77 intents x 2 texts, all test texts \| 1 \|"
            rf"( {NUMBER} ± {NUMBER} \|){{2}} \d of 1 \| {NUMBER} ± {NUMBER} \| [+-]{NUMBER} "
            rf"\| {NUMBER} \|",
            r"\| the same, the 27 held-out intents \| 1 \| .*",
            r"\| Omniglot images_evaluation, 5-way 2-shot \| 2 \| .*",
            r"\| emoji \(test subcategories\) via the Omniglot model, 5-way 2-shot \| 2 \| .*",
            rf"5 classes x 2 pictures: completed (adopted|kept_unadapted) in {NUMBER} s",
            rf"6 classes x 2 texts: completed (adopted|kept_unadapted) in {NUMBER} s",
            rf"query p99 during the job / idle: {NUMBER} / {NUMBER} ms = {NUMBER} .*",
        ),
        data="emoji",  # and banking77 and omniglot beside it
    ),
    "class_pages.py": Smoke(
        (
            *(
                rf"\| {kind} \| {NUMBER} \| {NUMBER} \| {NUMBER} \|"
                for kind in (
                    r"summary \(counts\)",
                    "first page, limit=100",
                    "first page, limit=1000",
                    "middle page, limit=100",
                    r"summary \+ first page",
                )
            ),
            rf"every class through the client \(pages of 1000\): 2,500 in {NUMBER} s",
            rf"target: first page p50 {NUMBER} ms <= 50 ms: (met|NOT met)",
        )
    ),
    "distributed_throughput.py": Smoke(
        (
            rf"1 process, 1 thread +{NUMBER} episodes/s \({NUMBER} s\)",
            rf"2 processes \(torchrun, gloo\), 1 thread each +{NUMBER} episodes/s .*",
            rf"ratio, 2 processes / 1 process 1 thread: {NUMBER}; .*",
        ),
        data="omniglot",
    ),
    "episode_threads.py": Smoke(
        (
            rf"20-way 5-shot, 5 episodes: .* one thread {NUMBER} s: {NUMBER}x faster",
            r"20-way 5-shot, 5 episodes, within-alphabet: .*x faster",
        )
    ),
    "event_loop_stalls.py": Smoke(
        (
            rf"idle +{NUMBER} +{NUMBER} +\{{\}}",
            rf"300 classes in pages of 1000 \(now\) +{NUMBER} +{NUMBER} +\{{200: \d+\}}",
            rf"diagnostics, 1 at once \(the limit\) +{NUMBER} +{NUMBER} +\{{200: \d+.*\}}",
            rf"before/now: p50 {NUMBER}x, p99 {NUMBER}x .*",
        )
    ),
    "header_limits.py": Smoke(
        (
            rf"8 unfinished 16 MiB header lines: the server took .* RSS \+-?{NUMBER} MiB",
            rf"20 connections with incomplete headers: \d+ open {NUMBER} s on",
            rf"server CPU per keep-alive GET .*: httptools {NUMBER} us .* h11 {NUMBER} us .*",
        )
    ),
    "large_collections.py": Smoke(
        (
            rf"\| synthetic \| 1,000 \| {NUMBER} / .*",
            rf"\| 300 \| {NUMBER} \| {NUMBER} \| .*",
            rf"\| 1,000 \| \d+ \| {NUMBER} \| {NUMBER} \| 32 \| {NUMBER} \| .*",
            rf"\| 1,000 \| exact \| {NUMBER} \| +\| +\| exact \| .*",
            rf"\| 1,000 \| ivf \| {NUMBER} \| {NUMBER} \| {NUMBER} \| ivf \| .*",
            rf"\| 1,000 \| ivf \| {NUMBER} \| \d+ \| {NUMBER} \| {NUMBER} \| .*",
        ),
        data="omniglot",
    ),
    "omniglot_accuracy.py": Smoke(
        (
            rf"\| 20-way 5-shot \| {NUMBER} ± {NUMBER} \| 98.9 \| (yes|no) \|",
            rf"\| 20-way 5-shot \| {NUMBER} ± {NUMBER} \| {NUMBER} ± {NUMBER} \|",
        ),
        data="omniglot",
    ),
    "open_set_scores.py": Smoke(
        (
            r"lake-validation, 2 episodes, AUROC:",
            rf"\| d1 / \(mean d\)\^0.25 \|( {NUMBER} \|){{6}}",
            rf"\| \(closed-set accuracy\) \|( {NUMBER}% \|){{6}}",
        ),
        data="omniglot",
    ),
    "picture_accuracy.py": Smoke(
        (
            r"20 emoji of \d+ test subcategories, \d+ drawings",
            r"\| setting \| picture model \(%\) \| frozen base \(%\) \| Omniglot Conv-4 \(%\) .*",
            rf"\| 20-way 1-shot \|( {NUMBER} ± {NUMBER} \|){{3}} [+-]{NUMBER} \|",
        ),
        data="emoji",
    ),
    "picture_service.py": Smoke(
        (
            rf"\(a\) three models ready in {NUMBER} s; RSS {NUMBER} MiB",
            rf" +encoder alone p50 +{NUMBER} ms +p99 +{NUMBER} ms",
            rf"\(c\) 4 per request, best of 2 rounds: HTTP +{NUMBER}/s .* ratio {NUMBER}",
            rf"\(d\) server RSS after \(b\) and \(c\): {NUMBER} MiB",
        ),
        data="emoji",
    ),
    "rejection_adaptation.py": Smoke(
        (
            rf"\| 2 \| checkpoint \| {NUMBER}% \| {NUMBER}%-{NUMBER}% \| {NUMBER}% \|",
            rf"\| 8 \| collection \| {NUMBER}% \| {NUMBER}%-{NUMBER}% \| {NUMBER}% \|",
        ),
        data="omniglot",
    ),
    "request_memory.py": Smoke(
        (
            rf"\| query, 64x64 pixels of 1s \| {NUMBER} MB \| 2x \d+ \| .*",
            rf"\| support, 500 tiny examples \| {NUMBER} MB \| .*",
            rf"\| embed, 4 x 16x16 pixels \(accepted\) \| {NUMBER} MB \| 2x 200 \| .*",
        )
    ),
    "scale_out.py": Smoke(
        (
            rf"\| PostgreSQL, 2 replicas \(LISTEN/NOTIFY\) \| {NUMBER} \| {NUMBER} \| .*",
            rf"\| SQLite, 2 processes \(polling\) \| {NUMBER} \| {NUMBER} \| .*",
            r"\| stale reads with min_revision, PostgreSQL.* \| 0 of 4 \| 0 \| yes \|",
            r"\| stale reads with min_revision, SQLite.* \| 0 of 4 \| 0 \| yes \|",
            rf"WORKERS=2 / WORKERS=1: queries {NUMBER}, healthz {NUMBER}; .*",
            r"\| failed answers during the model upgrade \| \d+ \| 0 \| (yes|NO) \|",
            r"\| acknowledged writes lost after 1 SIGKILLs \| 0 of \d+ \| 0 \| yes \|",
        ),
        postgres=True,
    ),
    "serve_latency.py": Smoke(
        (rf"5 sequential single-image queries, 2 classes x 2 shots, .* p99 {NUMBER} ms, .*",)
    ),
    "serve_load.py": Smoke(
        (
            rf"\| GET /healthz, c=32 \| {NUMBER} \| +\| {NUMBER} \| {NUMBER} \| +\|",
            # every row of queries has its mean encoder batch, read from the server's metrics
            rf"\| query 1 image, c=8( \| {NUMBER}){{5}} \|",
            rf"\| query 64 images, c=4 \| {NUMBER} \| {NUMBER} \| .* \| {NUMBER} \|",
            rf"\| query 1 image, large collection, c=8 \| {NUMBER} \| .* \| {NUMBER} \|",
            rf"\| process start to ready, large collection \| {NUMBER} s \| <= 5 s \| .*",
        ),
        data="omniglot",
        wrk=True,
    ),
    "snapshots.py": Smoke(
        (
            # the server's peak RSS over idle within the target: memory, not time
            *(
                rf"\| {step} \|( {NUMBER} \|){{5}} [+-]{NUMBER} \(met\) \|"
                for step in (
                    r"export \(embeddings\)",
                    r"restore \(embeddings\)",
                    r"export \(no embeddings\)",
                    "restore, embedding every example",
                )
            ),
            # the embeddings travelled: the restored copy answers exactly as the original
            r"40 queries, original against the restored copy: same top-5 labels 40/40, "
            r"distances equal 40/40, within 1e-5 40/40",
            r"original against the re-embedded copy: same top-5 labels 40/40, .*",
        )
    ),
    "text_service.py": Smoke(
        (
            rf"  draw 0: intents {NUMBER}, base {NUMBER}",
            rf" +8 per request: HTTP +{NUMBER}/s +encoder alone +{NUMBER}/s",
        ),
        data="banking77",
    ),
    "text_transfer.py": Smoke(
        (
            r"skill intents: 4 intents, 128 sentences, 2 skills",
            rf"\| frozen base \(accuracy\) \| {NUMBER}% \| {NUMBER}% \|",
            rf"\| blend of the first with the identity, a = 0.5{GAIN}{GAIN} \|",
            rf"\| whitening start, shrinkage 30{GAIN}{GAIN} \|",
        ),
        data="banking77",
    ),
    "worst_case_requests.py": Smoke(
        (
            r"\| 8 texts of 1000 characters \| 200 \| .*",
            r"\| 2 images of 256x256 \| 200 \| .*",
            r"\| 2 images of 1x65536 \| 422 \| .*",  # longer than PROTONET_MAX_IMAGE_SIDE
            r"\| 8 images of 32x32 \| 200 \| .*",
        )
    ),
}


def scripts() -> list[str]:
    return sorted(p.name for p in BENCHMARKS.glob("*.py") if p.name not in HELPERS)


def test_every_smoke_entry_names_a_script_in_the_folder():
    assert set(SMOKES) <= set(scripts())


def test_smoke_values_replace_the_defaults_and_flags_still_win():
    def parse(*argv: str) -> argparse.Namespace:
        parser = argparse.ArgumentParser()
        parser.add_argument("--episodes", type=int, default=600)
        parser.add_argument("--seconds", type=float, default=10.0)
        return smoke.parse_args(parser, {"episodes": 5, "seconds": 0.2}, list(argv))

    assert vars(parse()) == {"episodes": 600, "seconds": 10.0, "smoke": False}
    assert vars(parse("--smoke")) == {"episodes": 5, "seconds": 0.2, "smoke": True}
    assert parse("--smoke", "--episodes", "7").episodes == 7


def test_a_smoke_value_for_an_option_the_script_lacks_is_refused():
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=600)
    with pytest.raises(ValueError, match="episdoes"):
        smoke.parse_args(parser, {"episdoes": 5}, ["--smoke"])


@pytest.mark.slow
@pytest.mark.parametrize("script", scripts())
def test_the_benchmark_runs_in_smoke_mode(script: str, request: pytest.FixtureRequest):
    entry = SMOKES.get(script)
    assert entry is not None, (
        f"benchmarks/{script} has no smoke entry: give it --smoke (benchmarks/smoke.py says "
        "how) and list the lines it prints in SMOKES"
    )
    if entry.data:
        require_path(SHARED_DATA / entry.data, f"{entry.data} data")
    if entry.postgres:
        request.getfixturevalue("postgres_url")  # skips without PostgreSQL, fails with CI=true
    if entry.wrk:
        require_path(Path(shutil.which("wrk") or "/usr/bin/wrk"), "wrk (make wrk installs it)")
    output = run_smoke(script)
    missing = [
        pattern for pattern in entry.lines if not re.search(f"^{pattern}$", output, re.MULTILINE)
    ]
    assert not missing, f"lines not printed: {missing}\n{output}"


def run_smoke(script: str) -> str:
    """The script's output (stdout) with ``--smoke``; fails on a non-zero exit."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PROTONET_")}
    environment["PYTHONPATH"] = str(REPO_ROOT)
    environment["HF_HUB_OFFLINE"] = "1"  # the text models' base encoder is installed
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--smoke"],
        capture_output=True,
        text=True,
        timeout=600,
        env=environment,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}{result.stderr}"
    return result.stdout
