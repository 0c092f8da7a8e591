"""SIGKILL at named moments inside the writes: the proof that a crash leaves old or new, never torn.

A random kill mostly lands before or after a write, which proves nothing about the write.
Here each kill lands at a point :mod:`pipeline.crash_points` names (``TSAD_CRASH_AT``), inside
the write of a scored day's files, the trainer's checkpoint or the model's detector. For each
point: the process is killed there, what it left is checked (nothing, or the previous complete
output byte for byte), and a rerun must end byte-identical to an undisturbed run. A kill counts
as "inside the write" only when the write's temporary file or staged folder is found after it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pipeline import steps
from pipeline.config import Settings
from pipeline.crash_points import CRASH_AT
from pipeline.data import storage

if TYPE_CHECKING:
    from benchmarks.reliability import Lab

KILLED = -signal.SIGKILL


@dataclass
class CrashResult:
    """Kills at one point: how many landed inside the write, kept the output, reran identical."""

    point: str
    what: str
    kills: int = 0
    landed: int = 0
    kept: int = 0
    identical: int = 0
    notes: list[str] = field(default_factory=list)

    def add(self, landed: bool, kept: bool, identical: bool, note: str = "") -> None:
        self.kills += 1
        self.landed += landed
        self.kept += kept
        self.identical += identical
        if note:
            self.notes.append(note)

    @classmethod
    def one(cls, point: str, what: str, landed: bool, kept: bool, identical: bool) -> CrashResult:
        result = cls(point, what)
        result.add(landed, kept, identical)
        return result

    @property
    def passed(self) -> bool:
        return 0 < self.kills == self.landed == self.kept == self.identical

    def cells(self) -> list[str]:
        """The point's row of the crash-point table (see :data:`TABLE_HEADER`)."""
        counts = [f"{count}/{self.kills}" for count in (self.landed, self.kept, self.identical)]
        verdict = "pass" if self.passed else "FAIL " + "; ".join(self.notes)
        return [f"`{self.point}`", self.what, str(self.kills), *counts, verdict]


TABLE_HEADER = [
    "crash point (TSAD_CRASH_AT)",
    "the kill interrupts",
    "kills",
    "inside the write",
    "left nothing or the previous output",
    "rerun byte-identical",
    "result",
]


def folder_bytes(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` by relative path: what a reader of it would see."""
    if not directory.is_dir():
        return {}
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def leftovers(target: Path) -> list[Path]:
    """A killed write's traces beside ``target``: a staged folder, a folder moved aside."""
    return sorted(
        path for path in target.parent.glob(f".{target.name}.*") if path.suffix in {".tmp", ".old"}
    )


# --- scoring -----------------------------------------------------------------------------------


SCORING_POINTS = {
    "append:scores.parquet": "scores file half written",
    "commit:scores.parquet": "scores file written, not renamed",
    "commit:alarms.parquet": "alarm episodes written, not renamed",
    "commit:report.html": "daily report written, not renamed",
    "commit:summary.json": "summary written, not renamed",
    "staged:{partition}": "the day's folder complete, not moved in",
    "swap:{partition}": "previous day's folder moved aside, new one not in",
}


def scoring_points(partition: str) -> dict[str, str]:
    """Each point of a day's scoring, named for ``partition``, with what a kill there stops."""
    return {point.format(partition=partition): what for point, what in SCORING_POINTS.items()}


def kill_scoring(lab: Lab, over_previous: list[str], on_empty: list[str]) -> list[CrashResult]:
    """Kill ``tsad score`` at each point in turn, then rerun it once; the same on an empty day.

    The kills of a list follow each other without a clean run between them, so each run also
    recovers what the kill before it left, and the one rerun after them must still end
    byte-identical to the undisturbed output. ``over_previous`` points are killed over the
    previous complete output (it must stay, or the partition be absent), ``on_empty`` ones on
    a day never scored (nothing may appear).
    """
    from benchmarks.reliability import DATASET, REFERENCE_DAY

    out = lab.settings.partition("scores", DATASET, REFERENCE_DAY)
    meaning = scoring_points(out.name)
    results: dict[str, CrashResult] = {}
    for points, previous in ((over_previous, lab.reference), (on_empty, {})):
        if not points:
            continue
        _restore(out, previous)
        outcomes = []
        for point in points:
            code, _ = lab.score_cli(REFERENCE_DAY, lab.env | {CRASH_AT: point})
            landed = code == KILLED and bool(leftovers(out))
            outcomes.append((point, landed, folder_bytes(out) in (previous, {})))
        code, text = lab.score_cli(REFERENCE_DAY)
        identical = code == 0 and folder_bytes(out) == lab.reference and not leftovers(out)
        for point, landed, kept in outcomes:
            result = results.setdefault(point, CrashResult(point, meaning[point]))
            result.add(landed, kept, identical, "" if code == 0 else text[-200:])
    return list(results.values())


def _restore(out: Path, files: dict[str, bytes]) -> None:
    """Make ``out`` hold exactly ``files`` (none: no partition at all)."""
    shutil.rmtree(out, ignore_errors=True)
    if files:
        out.mkdir(parents=True)
        for name, data in files.items():
            (out / name).write_bytes(data)


# --- training ----------------------------------------------------------------------------------

TRAIN = "import sys; from pipeline import steps; steps.train(sys.argv[1], resume=True)"


@dataclass
class TrainingLab:
    """A prepared run folder trained undisturbed once: the detector every resumed run must match."""

    lab: Lab
    prepared: Path
    reference: dict[str, bytes]

    @classmethod
    def build(cls, lab: Lab, prepared: Path) -> TrainingLab:
        whole = prepared.with_name(prepared.name + "-whole")
        shutil.copytree(prepared, whole)
        if cls.train(lab, whole) != 0:
            raise RuntimeError("undisturbed training failed")
        return cls(lab, prepared, folder_bytes(detector(whole)))

    @staticmethod
    def train(lab: Lab, run: Path, point: str | None = None) -> int:
        """``steps.train`` on ``run`` in a process of its own, as the Airflow task runs it."""
        env = lab.env if point is None else lab.env | {CRASH_AT: point}
        return subprocess.run([sys.executable, "-c", TRAIN, str(run)], env=env).returncode

    def fresh_run(self, name: str) -> Path:
        run = self.prepared.with_name(f"{self.prepared.name}-{name}")
        shutil.copytree(self.prepared, run)
        return run


def detector(run: Path) -> Path:
    return run / "bundle" / "detector"


def checkpoint(run: Path) -> Path:
    return run / "checkpoints" / "last.pt"


def _checkpoint_epoch(run: Path) -> int:
    path = checkpoint(run)
    return int(torch.load(path, weights_only=True)["epoch"]) if path.is_file() else 0


def kill_training(training: TrainingLab, replacing: bool = True) -> list[CrashResult]:
    """One run folder killed mid-epoch, in its checkpoint write and in its detector's, resumed.

    The kills follow each other on one run so that each write has a previous complete output
    to keep: the checkpoint write is killed at epoch 2 with epoch 1's checkpoint in place, the
    detector's while it replaces a complete one (``replacing``: the run is then trained again,
    as a retried task does, and killed while its detector is swapped). A mid-epoch kill has no
    temporary to find: it counts as inside epoch 2 when epoch 1's checkpoint is the one left.
    """
    lab, run = training.lab, training.fresh_run("killed")
    temporary = checkpoint(run).with_suffix(".pt.tmp")

    def resumed_identical() -> bool:
        return training.train(lab, run) == 0 and folder_bytes(detector(run)) == training.reference

    killed = training.train(lab, run, "epoch:2") == KILLED
    mid_epoch = (killed and _checkpoint_epoch(run) == 1, _checkpoint_epoch(run) == 1)
    before = checkpoint(run).read_bytes()
    killed = training.train(lab, run, "commit:last.pt") == KILLED
    in_checkpoint = (killed and temporary.is_file(), checkpoint(run).read_bytes() == before)
    killed = training.train(lab, run, "staged:detector") == KILLED
    staged = (killed and bool(leftovers(detector(run))), not detector(run).exists())
    identical = resumed_identical()  # one resume after the three kills
    results = [
        CrashResult.one(point, what, landed, kept, identical)
        for point, what, (landed, kept) in [
            ("epoch:2", "training in epoch 2 of 3", mid_epoch),
            ("commit:last.pt", "checkpoint written, not renamed", in_checkpoint),
            ("staged:detector", "model's detector saved, not moved in", staged),
        ]
    ]
    if not replacing:
        return results
    killed = training.train(lab, run, "swap:detector") == KILLED
    swap = CrashResult.one(
        "swap:detector",
        "previous detector moved aside, new one not in",
        killed and bool(leftovers(detector(run))),
        folder_bytes(detector(run)) in ({}, training.reference),
        resumed_identical(),
    )
    return [*results, swap]


# --- scoring onto object storage --------------------------------------------------------------

S3_POINTS = {
    "s3-lease:scores": "lease taken, nothing uploaded",
    "s3-upload:scores/alarms.parquet": "1st of 4 files uploaded to a new attempt",
    "s3-upload:scores/report.html": "2nd of 4 files uploaded",
    "s3-upload:scores/scores.parquet": "3rd of 4 files uploaded",
    "s3-upload:scores/summary.json": "4th of 4 files uploaded",
    "s3-uploaded:scores": "attempt complete, manifest not PUT",
    "s3-manifest:scores": "manifest PUT (the commit), old attempt not deleted",
    "s3-cleanup:scores": "old attempt deleted, lease not released",
    "s3-upload:validation/report.html": "validation: 1st of 2 files uploaded",
    "s3-upload:validation/report.json": "validation: 2nd of 2 files uploaded",
    "s3-uploaded:validation": "validation: attempt complete, manifest not PUT",
    "s3-manifest:validation": "validation: manifest PUT, old attempt not deleted",
}


@contextlib.contextmanager
def s3_lab(lab: Lab) -> Iterator[tuple[Lab, Settings]]:
    """``lab`` with its data tree on an S3 server: the reference day and the day before copied
    there through the commit protocol; also a reader's settings (an empty working copy)."""
    from benchmarks.reliability import DATASET, REFERENCE_DAY
    from benchmarks.s3_server import BUCKET, copy_partition, environment, s3_environment, s3_server

    with s3_server() as endpoint:
        variables = s3_environment(endpoint, "crash") | {"TSAD_S3_LEASE_SECONDS": "1"}
        with environment(variables):
            on_s3 = lab.settings.model_copy(update={"data_uri": f"s3://{BUCKET}/crash"})
            for zone in ("landing", "validation"):
                for day in (REFERENCE_DAY - dt.timedelta(days=1), REFERENCE_DAY):
                    copy_partition(lab.settings, on_s3, zone, DATASET, day)
            reader = on_s3.model_copy(update={"home": lab.settings.home.parent / "s3-reader"})
            yield dataclasses.replace(lab, env_extra=variables), reader


def seen(reader: Settings, zone: str, day: dt.date) -> dict[str, bytes]:
    """What a reader of the store finds in a partition (nothing when none is committed)."""
    from benchmarks.reliability import DATASET

    partition = storage.fetch(reader, reader.partition(zone, DATASET, day))
    return {k: v for k, v in folder_bytes(partition).items() if not k.startswith(".")}


def stored_keys(reader: Settings, zone: str, day: dt.date) -> list[str]:
    """The partition's object keys (its lease, manifest, attempts' files), prefix removed."""
    from benchmarks.reliability import DATASET
    from benchmarks.s3_server import keys

    key = storage.data_store(reader).key(reader.partition(zone, DATASET, day))  # type: ignore[attr-defined]
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    return [name.removeprefix(key + "/") for name in keys(endpoint, key + "/")]


def _attempts(names: list[str]) -> set[str]:
    return {name.split("/")[1] for name in names if name.startswith("_attempts/")}


def kill_s3(lab: Lab, points: list[str]) -> list[CrashResult]:
    """Kill ``tsad score`` (or ``tsad validate``) at each commit step on S3, then rerun it.

    A kill lands inside the write when the writer's lease is left behind (it is taken before
    the first upload and released after the cleanup). What a reader then finds must be the
    previous complete day, byte for byte (a committed new one is the same bytes: scoring is
    deterministic; a validation report records its time, so there the file names are compared);
    the rerun must leave the undisturbed output, one attempt and no lease.
    """
    from benchmarks.reliability import REFERENCE_DAY

    results = []
    with s3_lab(lab) as (on_s3, reader):
        on_s3.score_cli(REFERENCE_DAY)
        reference = {zone: seen(reader, zone, REFERENCE_DAY) for zone in ("scores", "validation")}
        for point in points:
            zone = point.split(":")[1].split("/")[0]
            run = on_s3.score_cli if zone == "scores" else on_s3.validate_cli
            code, _ = run(REFERENCE_DAY, on_s3.env | {CRASH_AT: point})
            landed = code == KILLED and "_lease.json" in stored_keys(reader, zone, REFERENCE_DAY)
            kept = _same(seen(reader, zone, REFERENCE_DAY), reference[zone], zone)
            code, text = run(REFERENCE_DAY, on_s3.env)
            names = stored_keys(reader, zone, REFERENCE_DAY)
            identical = (
                code == 0
                and _same(seen(reader, zone, REFERENCE_DAY), reference[zone], zone)
                and len(_attempts(names)) == 1
                and "_lease.json" not in names
            )
            result = CrashResult(point, S3_POINTS[point])
            result.add(landed, kept, identical, "" if code == 0 else text[-200:])
            results.append(result)
    return results


def _same(found: dict[str, bytes], reference: dict[str, bytes], zone: str) -> bool:
    """Byte for byte for a scored day; the same complete files for a validation report."""
    return found == reference if zone == "scores" else sorted(found) == sorted(reference)


def crash_results(lab: Lab) -> Iterator[CrashResult]:
    """Every crash point tried on ``lab``: a day's scoring, a small transformer's training, then
    a day's scoring and validation committed to an S3 server."""
    from benchmarks.reliability import REFERENCE_DAY, START, run_config

    points = list(scoring_points(f"date={REFERENCE_DAY.isoformat()}"))
    # Only a partition that exists is moved aside: the swap is not reached on an empty day.
    yield from kill_scoring(lab, points, [p for p in points if not p.startswith("swap:")])
    config = run_config(START, epochs=3, device="cpu")
    prepared = Path(steps.prepare(config, lab.settings))
    yield from kill_training(TrainingLab.build(lab, prepared))
    yield from kill_s3(lab, list(S3_POINTS))
