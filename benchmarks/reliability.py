"""Bad input, crashes and outages, tried for real: what was expected, what happened, what was lost.

    make reliability                     # or: python -m benchmarks.reliability --kills 20

Builds a throwaway ``TSAD_HOME`` with a few days of synthetic vital signs and a registered
``@production`` model, then runs every case and prints one Markdown table row per case. A case
passes when the observed handling is the expected one and no data is lost; the exit status is
non-zero when any case fails. "Data lost" counts landed rows that are neither unchanged in landing
nor scored, plus scored rows that differ from an undisturbed run's.

Each case is a :class:`Case` in :data:`CASES`: a name, the expected handling in words, and a
function of the :class:`Lab` returning an :class:`Outcome`. A PostgreSQL restart under a
running Airflow DAG needs the whole Airflow stack, so it is a test instead:
``tests/integration/test_postgres_restart.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from benchmarks import crash_points
from pipeline import steps
from pipeline.config import RunConfig, Settings, project_root
from pipeline.data import flags
from pipeline.scoring import ModelMismatchError

DATASET = "vitals"
START = dt.date(2026, 1, 1)
DAYS = 30
PATIENTS = 3
REFERENCE_DAY = START + dt.timedelta(days=4)
FIRST_CASE_DAY = START + dt.timedelta(days=6)
REPO = Path(__file__).resolve().parents[1]
WINDOW = RunConfig.load(DATASET).window


def run_config(first_day: dt.date, **fields: object) -> RunConfig:
    """The dataset's run config on the four days from ``first_day``, ``fields`` replaced.

    Two days train, the third validates, the fourth tests: small enough that the cases that
    train on it spend seconds doing so.
    """
    days = [first_day + dt.timedelta(days=offset) for offset in range(4)]
    splits = {
        "train": {"start": days[0], "end": days[1]},
        "validation": {"start": days[2], "end": days[2]},
        "test": {"start": days[3], "end": days[3]},
    }
    return RunConfig.model_validate(RunConfig.load(DATASET).model_dump() | splits | fields)


@dataclass(frozen=True)
class Outcome:
    """What a case observed, the rows it lost, and whether that is the expected handling."""

    observed: str
    lost: int
    passed: bool


@dataclass
class Lab:
    """A throwaway ``TSAD_HOME`` with landed days and a production model; hands out case days."""

    settings: Settings
    kills: int
    seed: int
    _next_day: dt.date = FIRST_CASE_DAY
    reference: dict[str, bytes] = field(default_factory=dict)
    untouched: dict[dt.date, dict[str, str]] = field(default_factory=dict)
    env_extra: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """The environment a ``tsad`` subprocess needs to work in this lab."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TSAD_"))}
        return (
            base
            | {
                "TSAD_HOME": str(self.settings.home),
                "PYTHONPATH": str(REPO),
                "OMP_NUM_THREADS": "1",
            }
            | self.env_extra
        )

    def new_day(self) -> dt.date:
        """A landed day no other case has touched."""
        day = self._next_day
        self._next_day += dt.timedelta(days=1)
        return day

    def landing(self, day: dt.date) -> Path:
        return self.settings.partition("landing", DATASET, day)

    def clean(self, day: dt.date) -> pd.DataFrame:
        return pd.read_parquet(self.landing(day) / "part-0.parquet")

    def land(self, day: dt.date, content: pd.DataFrame | bytes, name: str = "part-0.parquet"):
        """Replace a day's landed files with ``content`` (a frame, or raw bytes for ``name``)."""
        directory = self.landing(day)
        shutil.rmtree(directory, ignore_errors=True)  # a day past the generated ones: none
        directory.mkdir(parents=True)
        path = directory / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif name.endswith(".csv"):
            content.to_csv(path, index=False)
        else:
            content.to_parquet(path, index=False)

    def tsad(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start ``tsad ARGS`` as its own process group (so a kill takes all of it)."""
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", *args],
            env=env or self.env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def score_cli(self, day: dt.date, env: dict[str, str] | None = None) -> tuple[int, str]:
        return self._day_cli("score", day, env)

    def validate_cli(self, day: dt.date, env: dict[str, str] | None = None) -> tuple[int, str]:
        return self._day_cli("validate", day, env)

    def _day_cli(self, command: str, day: dt.date, env: dict[str, str] | None) -> tuple[int, str]:
        process = self.tsad(command, "--dataset", DATASET, "--date", day.isoformat(), env=env)
        out, err = process.communicate()
        return process.returncode, out + err


@dataclass(frozen=True)
class Case:
    name: str
    expected: str
    run: Callable[[Lab], Outcome]


def checksums(directory: Path) -> dict[str, str]:
    """SHA-256 of every file under ``directory``, by relative path."""
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def temporaries(home: Path) -> list[Path]:
    """Temporary files anywhere under the data tree (a crash's leftovers)."""
    return sorted((home / "data").rglob("*.tmp"))


def partition_bytes(directory: Path) -> dict[str, bytes]:
    if not directory.is_dir():
        return {}
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


# --- bad input ---------------------------------------------------------------------------------


def _rejected(change: Callable[[Lab, dt.date], None], problem: str) -> Callable[[Lab], Outcome]:
    """A case whose batch must be refused with ``problem`` in the error, and quarantined whole."""

    def run(lab: Lab) -> Outcome:
        day = lab.new_day()
        landed_rows = len(lab.clean(day))
        change(lab, day)
        before = checksums(lab.landing(day))
        try:
            steps.score(DATASET, day, lab.settings)
            error = "scored"
        except steps.BatchRejected as exc:
            error = str(exc)
        quarantine = lab.settings.partition("quarantine", DATASET, day)
        kept = {
            name: digest
            for name, digest in checksums(quarantine).items()
            if name not in {"validation_report.json", "validation_report.html"}
        }
        landing_intact = checksums(lab.landing(day)) == before
        checks = {
            "named": problem in error,
            "quarantined with report": kept == before
            and (quarantine / "validation_report.json").is_file(),
            "landing intact": landing_intact,
            "no output": not lab.settings.partition("scores", DATASET, day).exists(),
        }
        line = next((text.strip(" -") for text in error.splitlines() if problem in text), error)
        observed = f"{_shorten(line)}; " + ", ".join(k for k, ok in checks.items() if ok)
        failed = [k for k, ok in checks.items() if not ok]
        if failed:
            observed += "; NOT " + ", ".join(failed)
        return Outcome(observed, 0 if landing_intact else landed_rows, not failed)

    return run


def _shorten(text: str, head: int = 40, tail: int = 50) -> str:
    return text if len(text) <= head + tail else f"{text[:head]}...{text[-tail:]}"


def _landed(make: Callable[[pd.DataFrame], pd.DataFrame | bytes], name: str = "part-0.parquet"):
    """Land, as file ``name``, what ``make`` turns the day's clean data into."""

    def change(lab: Lab, day: dt.date) -> None:
        lab.land(day, make(lab.clean(day)), name)

    return change


def _nan_burst(frame: pd.DataFrame) -> pd.DataFrame:
    burst = frame.copy()
    burst.loc[100:399, "heart_rate"] = np.nan  # 300 of one patient's minutes in a row
    return burst


def _with(column: str, rows: slice, value: float) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def edit(frame: pd.DataFrame) -> pd.DataFrame:
        changed = frame.copy()
        changed.loc[rows, column] = value
        return changed

    return edit


def _mixed_zones(frame: pd.DataFrame) -> pd.DataFrame:
    text = frame.copy()
    stamps = frame["timestamp"]
    text["timestamp"] = stamps.dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    paris = stamps.iloc[:60].dt.tz_convert("Europe/Paris").dt.strftime("%Y-%m-%dT%H:%M:%S%z")
    text.loc[: len(paris) - 1, "timestamp"] = paris.to_numpy()
    return text


def _truncated(frame: pd.DataFrame) -> bytes:
    whole = BytesIO()
    frame.to_parquet(whole, index=False)
    return whole.getvalue()[: len(whole.getvalue()) // 2]


def _semicolons(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False, sep=";").encode()


def _constant_training_feature(lab: Lab) -> Outcome:
    """Training days whose temperature never moves: training must refuse before any run dir."""
    days = [lab.new_day() for _ in range(4)]
    for day in days:
        lab.land(day, lab.clean(day).assign(temperature=37.0))
    config = run_config(days[0], detector="pca", detector_params={})
    runs = lab.settings.home / "runs" / DATASET
    before = sorted(runs.iterdir())
    try:
        steps.prepare(config, lab.settings)
        error = "prepared"
    except steps.TrainingDataRejected as exc:
        error = str(exc)
    no_run = sorted(runs.iterdir()) == before
    passed = "temperature=37" in error and no_run
    observed = f"{error[:80]}...; {'no run dir left' if no_run else 'RUN DIR LEFT'}"
    return Outcome(observed, 0, passed)


# --- policies that let data through ------------------------------------------------------------


def _let_through(
    edit: Callable[[pd.DataFrame], pd.DataFrame], flag: str | None, expected_flagged: int | None
) -> Callable[[Lab], Outcome]:
    """A case whose rows must all be scored, ``flag`` on exactly ``expected_flagged`` of them."""

    def run(lab: Lab) -> Outcome:
        steps.validate(DATASET, lab.new_day(), lab.settings)  # a clean day before: window context
        day = lab.new_day()
        landed = edit(lab.clean(day))
        lab.land(day, landed)
        before = checksums(lab.landing(day))
        scores = pd.read_parquet(steps.score(DATASET, day, lab.settings))
        report = json.loads(
            (lab.settings.partition("validation", DATASET, day) / steps.REPORT_FILE).read_text()
        )
        counted = flags.counts(scores[flags.FLAGS])
        flagged = counted.get(flag, 0) if flag else sum(counted.values())
        lost = max(0, len(landed) - len(scores))
        warnings = report["report"]["warnings"]
        passed = (
            lost == 0
            and checksums(lab.landing(day)) == before
            and (expected_flagged is None or flagged == expected_flagged)
        )
        notes = f"; report warns: {warnings[0]}" if warnings else ""
        observed = f"{len(scores)}/{len(landed)} rows scored, {flagged} flagged {flag or ''}"
        return Outcome(observed + notes, lost, passed)

    return run


def _unknown_column(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(ward_note="bed 4")


def _shuffled(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sample(frac=1.0, random_state=3).reset_index(drop=True)


def _newcomer(frame: pd.DataFrame) -> pd.DataFrame:
    first = frame["patient_id"].iloc[0]
    return frame.assign(patient_id=frame["patient_id"].replace(first, "admitted-today"))


GAP_MINUTES = 120


def _gap(frame: pd.DataFrame) -> pd.DataFrame:
    """Two hours without readings for one patient, from 06:00."""
    first = frame["patient_id"] == frame["patient_id"].iloc[0]
    minute = (frame["timestamp"] - frame["timestamp"].dt.normalize()).dt.total_seconds() // 60
    return frame[~(first & minute.between(360, 360 + GAP_MINUTES - 1))].reset_index(drop=True)


# --- faults ------------------------------------------------------------------------------------


def _kill_while_scoring(lab: Lab) -> Outcome:
    """SIGKILL ``tsad score`` at random moments, rerun it, compare with an undisturbed run."""
    out = lab.settings.partition("scores", DATASET, REFERENCE_DAY)
    rng = random.Random(lab.seed)
    started = time.monotonic()
    code, text = lab.score_cli(REFERENCE_DAY)
    duration = time.monotonic() - started
    if code != 0:
        return Outcome(f"undisturbed run failed: {text[-200:]}", 0, False)
    reference = partition_bytes(out)
    left = {"nothing": 0, "complete output": 0, "temporary file": 0, "partial": 0}
    mismatches = 0
    for _ in range(lab.kills):
        shutil.rmtree(out)
        process = lab.tsad("score", "--dataset", DATASET, "--date", REFERENCE_DAY.isoformat())
        time.sleep(rng.uniform(0.1, 1.0) * duration)
        with contextlib.suppress(ProcessLookupError):  # it may have finished already
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        left[_leftovers(out, reference)] += 1
        code, text = lab.score_cli(REFERENCE_DAY)
        if code != 0 or partition_bytes(out) != reference or temporaries(lab.settings.home):
            mismatches += 1
    rows = len(pd.read_parquet(out / steps.SCORES_FILE))
    seen = ", ".join(f"{count} {what}" for what, count in left.items() if count)
    observed = (
        f"{lab.kills} kills (left: {seen}); after rerun {lab.kills - mismatches}/{lab.kills} "
        "byte-identical, no temporary files"
        if not mismatches
        else f"{mismatches}/{lab.kills} reruns differ or left temporary files"
    )
    return Outcome(observed, rows if mismatches else 0, mismatches == 0 and left["partial"] == 0)


def _leftovers(out: Path, reference: dict[str, bytes]) -> str:
    """What a killed run left in the partition before any rerun."""
    found = partition_bytes(out)
    if any(name.endswith(".tmp") for name in found):
        return "temporary file"
    if not found:
        return "nothing"
    complete = all(found.get(name) == data for name, data in reference.items() if name in found)
    readable = steps.SCORES_FILE not in found or _readable(out / steps.SCORES_FILE)
    return "complete output" if complete and readable else "partial"


def _readable(path: Path) -> bool:
    try:
        pd.read_parquet(path)
    except Exception:  # any failure to read is exactly what this check looks for
        return False
    return True


def _concurrent_runs(lab: Lab) -> Outcome:
    out = lab.settings.partition("scores", DATASET, REFERENCE_DAY)
    reference = partition_bytes(out)
    shutil.rmtree(out)
    runs = [
        lab.tsad("score", "--dataset", DATASET, "--date", REFERENCE_DAY.isoformat())
        for _ in range(2)
    ]
    for process in runs:
        process.communicate()  # both already started, so they overlap; this drains the pipes
    codes = [process.returncode for process in runs]
    same = partition_bytes(out) == reference
    passed = codes == [0, 0] and same and not temporaries(lab.settings.home)
    observed = f"exit codes {codes}; output {'identical to' if same else 'DIFFERS from'} one run's"
    return Outcome(observed, 0 if same else len(reference), passed)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _mlflow_unreachable(lab: Lab) -> Outcome:
    day = lab.new_day()
    env = lab.env | {
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{_closed_port()}",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    }
    code, text = lab.score_cli(day, env)
    retries = text.count("; retry ")
    written = lab.settings.partition("scores", DATASET, day).exists()
    passed = code != 0 and "no answer from MLflow after" in text and not written and retries >= 3
    return Outcome(f"{retries} retries with backoff, then: {_last_line(text)}", 0, passed)


def _refused_unread(lab: Lab, env: dict[str, str], problem: str) -> Outcome:
    """``tsad score`` on a new day whose landed file no reader could parse.

    A refusal of the model that comes before any data is read names the model's problem, not
    the file's, and leaves no validation record, quarantine or output behind.
    """
    day = lab.new_day()
    lab.land(day, b"not a parquet file")
    code, text = lab.score_cli(day, env)
    touched = [
        kind
        for kind in ("validation", "quarantine", "scores")
        if lab.settings.partition(kind, DATASET, day).exists()
    ]
    observed = _last_line(text) + ("; data not read, nothing written" if not touched else "")
    if touched:
        observed += "; NOT untouched: " + ", ".join(touched)
    return Outcome(observed, 0, code != 0 and problem in text and not touched)


def _no_production_alias(lab: Lab) -> Outcome:
    env = lab.env | {"TSAD_MODEL_PREFIX": "unpromoted"}
    return _refused_unread(lab, env, "no @production version")


def _changed_spec(change: Callable[[dict], dict], problem: str) -> Callable[[Lab], Outcome]:
    """Score with a dataset spec edited after the production model was trained."""

    def run(lab: Lab) -> Outcome:
        root = Path(tempfile.mkdtemp(prefix="tsad-spec-"))
        shutil.copytree(project_root() / "configs", root / "configs")
        spec_path = root / "configs" / "datasets" / f"{DATASET}.yaml"
        spec_path.write_text(yaml.safe_dump(change(yaml.safe_load(spec_path.read_text()))))
        env = lab.env | {"TSAD_PROJECT_ROOT": str(root)}
        outcome = _refused_unread(lab, env, f"{ModelMismatchError.__name__}: ")
        shutil.rmtree(root)
        passed = outcome.passed and problem in outcome.observed
        return Outcome(outcome.observed, 0, passed)

    return run


def _last_line(text: str) -> str:
    """The CLI's one-paragraph failure message, shortened for a table cell."""
    start = text.rfind("tsad score failed:")
    message = " ".join(text[start if start >= 0 else 0 :].split())
    return message[:130] + ("..." if len(message) > 130 else "")


def _other_days_unaffected(lab: Lab) -> Outcome:
    """After all of the above, the reference day scores to the very same bytes."""
    out = lab.settings.partition("scores", DATASET, REFERENCE_DAY)
    steps.score(DATASET, REFERENCE_DAY, lab.settings)
    same = partition_bytes(out) == lab.reference
    untouched = all(checksums(lab.landing(day)) == digest for day, digest in lab.untouched.items())
    observed = (
        f"reference day output {'identical' if same else 'CHANGED'}; "
        f"untouched days' landing {'unchanged' if untouched else 'CHANGED'}"
    )
    return Outcome(observed, 0 if same and untouched else 1, same and untouched)


CASES: list[Case] = [
    Case("missing feature column", "refused, quarantined", _rejected(
        _landed(lambda f: f.drop(columns=["spo2"])), "column 'spo2' missing")),
    Case("numbers stored as text", "refused, quarantined", _rejected(
        _landed(lambda f: f.assign(heart_rate=f["heart_rate"].astype(str))),
        "heart_rate: not numeric")),
    Case("NaN burst above the spec's limit", "refused, quarantined", _rejected(
        _landed(_nan_burst), "heart_rate: 300 nulls")),
    Case("infinities", "refused, quarantined", _rejected(
        _landed(_with("sys_bp", slice(10, 14), np.inf)), "sys_bp: 5 infinite values")),
    Case("duplicate (entity, timestamp)", "refused, quarantined", _rejected(
        _landed(lambda f: pd.concat([f, f.iloc[:7]], ignore_index=True)),
        "rows with a duplicated key")),
    Case("timestamps outside the day", "refused, quarantined", _rejected(
        _landed(lambda f: f.assign(timestamp=f["timestamp"] + pd.Timedelta(hours=2))),
        "rows outside")),
    Case("timestamps without a time zone", "refused, quarantined", _rejected(
        _landed(lambda f: f.assign(timestamp=f["timestamp"].dt.tz_localize(None))),
        "not timezone-aware")),
    Case("mixed time zones (CSV)", "refused, quarantined", _rejected(
        _landed(_mixed_zones, "part-0.csv"), "not timezone-aware")),
    Case("empty file", "refused, quarantined", _rejected(
        _landed(lambda f: b""), "cannot read part-0.parquet")),
    Case("truncated Parquet file", "refused, quarantined", _rejected(
        _landed(_truncated), "cannot read part-0.parquet")),
    Case("CSV with the wrong delimiter", "refused, quarantined", _rejected(
        _landed(_semicolons, "part-0.csv"), "separated by ';'")),
    Case("values outside physical bounds", "refused, quarantined", _rejected(
        _landed(_with("spo2", slice(0, 2), 140.0)), "spo2: 3 values outside [50, 100]")),
    Case("constant feature in training data", "training refused naming it",
         _constant_training_feature),
    Case("extra unknown column", "warned and ignored, all rows scored",
         _let_through(_unknown_column, None, 0)),
    Case("out-of-order rows", "sorted, noted, rows flagged out_of_order",
         _let_through(_shuffled, flags.OUT_OF_ORDER, None)),
    Case("entity never seen in training", "scored, its rows flagged unseen_entity",
         _let_through(_newcomer, flags.UNSEEN_ENTITY, 1440)),
    Case(f"gap of {GAP_MINUTES} min (> window)", "scored, window-1 rows after it flagged",
         _let_through(_gap, flags.AFTER_GAP, WINDOW - 1)),
    Case("SIGKILL while scoring and writing", "rerun byte-identical, no temporary files",
         _kill_while_scoring),
    Case("two scoring runs for one day at once", "one complete output, never torn",
         _concurrent_runs),
    Case("MLflow unreachable", "retries with backoff, clear failure, no output",
         _mlflow_unreachable),
    Case("no @production alias", "clear error, no output", _no_production_alias),
    Case("production model lacks a spec feature", "refused before scoring", _changed_spec(
        lambda s: s | {"features": [*s["features"], {"name": "etco2", "min": 0, "max": 100}]},
        "expects features")),
    Case("production model's window at another step", "refused before scoring", _changed_spec(
        lambda s: s | {"frequency": "30s"}, "steps")),
    Case("other days", "unaffected by all of the above", _other_days_unaffected),
]  # fmt: skip


def build_lab(settings: Settings, kills: int, seed: int = 0) -> Lab:
    """Land ``DAYS`` days, train and promote a PCA model, and score the reference day once."""
    steps.generate(
        start=START, days=DAYS, patients=PATIENTS, labeled_from=START + dt.timedelta(2),
        settings=settings,
    )  # fmt: skip
    config = run_config(START, detector="pca", detector_params={})
    steps.validate_days(DATASET, steps.run_days(config), settings)
    run_dir = steps.prepare(config, settings)
    steps.evaluate(steps.calibrate(steps.train(run_dir)))
    steps.register(run_dir, settings)
    steps.promote_challenger(DATASET, settings=settings)
    lab = Lab(settings, kills, seed)
    steps.score(DATASET, REFERENCE_DAY, settings)
    lab.reference = partition_bytes(settings.partition("scores", DATASET, REFERENCE_DAY))
    lab.untouched = {
        day: checksums(lab.landing(day))
        for day in (START + dt.timedelta(offset) for offset in range((FIRST_CASE_DAY - START).days))
    }
    return lab


def run_cases(lab: Lab, cases: list[Case]) -> Iterator[tuple[Case, Outcome]]:
    for case in cases:
        try:
            outcome = case.run(lab)
        except Exception as exc:  # a case that crashes the runner is a failed case, not a stop
            outcome = Outcome(f"runner error {type(exc).__name__}: {exc}"[:150], 0, False)
        yield case, outcome


def markdown_row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |"


def print_crash_points(lab: Lab) -> int:
    """The crash-point table (kills at named moments inside writes); returns the failures."""
    print("\n" + markdown_row(crash_points.TABLE_HEADER))
    print(markdown_row(["---"] * len(crash_points.TABLE_HEADER)))
    failures = 0
    for result in crash_points.crash_results(lab):
        failures += not result.passed
        print(markdown_row(result.cells()), flush=True)
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs while scoring")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill delays")
    parser.add_argument("--only", help="run cases whose name contains this text")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="tsad-reliability-") as scratch:
        print("setting up: landing days, training and promoting a model ...", file=sys.stderr)
        os.environ["TSAD_HOME"] = str(Path(scratch) / "tsad")
        for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "TSAD_ARTIFACT_ROOT"):
            os.environ.pop(variable, None)
        lab = build_lab(Settings.from_env(), args.kills, args.seed)
        cases = [case for case in CASES if not args.only or args.only in case.name]
        print(markdown_row(["case", "expected handling", "observed", "data lost", "result"]))
        print(markdown_row(["---"] * 5))
        failures = 0
        for case, outcome in run_cases(lab, cases):
            failures += not outcome.passed
            verdict = "pass" if outcome.passed else "FAIL"
            print(
                markdown_row(
                    [case.name, case.expected, outcome.observed, str(outcome.lost), verdict]
                ),
                flush=True,
            )
        print(f"\n{len(cases) - failures}/{len(cases)} cases handled as expected", file=sys.stderr)
        if not args.only:
            failures += print_crash_points(lab)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
