"""The ``tsad`` command line: every command calls one step of ``pipeline.steps``.

Failures end with a non-zero exit and one paragraph saying what went wrong, not a traceback
(``TSAD_DEBUG=1`` shows the traceback). A successful command prints its result and the
product's own warnings only; ``-v`` brings back the libraries' logs and warnings.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import textwrap
from collections.abc import Sequence

from pipeline import __version__
from pipeline.choices import CALIBRATION_METHODS, DEVICES, PROMOTION_METRICS, REVIEW_LABELS
from pipeline.config import parse_date


class _ProductOrErrors(logging.Filter):
    """Lets through the product's warnings and anyone's errors: what a user must act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.split(".")[0] == "pipeline" or record.levelno >= logging.ERROR


def configure_output(verbose: bool) -> None:
    """Quiet by default: no library INFO lines, progress bars or advice on stderr.

    Great Expectations logs through the root logger (filtered here); MLflow configures loggers
    of its own when imported, so it is quieted through its environment variables, before any
    step imports it. Python warnings become log records so that the same filter applies.
    """
    logging.captureWarnings(True)
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        # Hundreds of lines about GX's own API documentation, at import time: never useful.
        logging.getLogger("great_expectations._docs_decorators").setLevel(logging.WARNING)
        return
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_ProductOrErrors())
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _print(value: object) -> None:
    print(value if isinstance(value, str) else json.dumps(value, indent=2, default=str))


def cmd_generate(args: argparse.Namespace) -> None:
    from pipeline import steps

    if args.dataset == "transactions":
        written = steps.generate_transactions(
            start=parse_date(args.start or "2026-02-02"),
            days=args.days,
            accounts=args.accounts,
            labeled_from=parse_date(args.labeled_from or "2026-02-06"),
            seed=args.seed,
            incidents_per_1000_accounts=args.incidents_per_1000,
        )
    else:
        written = steps.generate(
            start=parse_date(args.start or "2026-01-01"),
            days=args.days,
            patients=args.patients,
            labeled_from=parse_date(args.labeled_from or "2026-01-05"),
            seed=args.seed,
        )
    _print(f"wrote {len(written)} daily partitions, {written[0]} .. {written[-1]}")


def cmd_validate(args: argparse.Namespace) -> None:
    from pipeline import steps

    report = steps.validate(args.dataset, parse_date(args.date))
    _print(f"{args.dataset} {args.date}: valid (report {report})")


def cmd_train(args: argparse.Namespace) -> None:
    from pipeline import steps

    config = steps.run_config_from_params(vars(args))
    steps.validate_days(config.dataset, steps.run_days(config))
    run_dir = steps.prepare(config)
    calibrated = [
        steps.calibrate(steps.train(candidate, progress=True))
        for candidate in steps.candidate_runs(run_dir)
    ]
    steps.evaluate(steps.select(run_dir, calibrated))
    registered = steps.register(run_dir)
    decision = steps.promote_challenger(config.dataset, metric=config.promotion_metric)
    _print({"run_dir": run_dir, "registered": registered, "promotion": decision.to_dict()})


def cmd_ingest(args: argparse.Namespace) -> None:
    from pipeline import steps

    _print(f"landed at {steps.ingest(args.dataset, parse_date(args.date))}")


def cmd_score(args: argparse.Namespace) -> None:
    """One day scored whole, as ``--shards N`` in this process, or one ``--shard K/N`` alone
    (committed by ``tsad finalize`` once all are); without either, the spec's shard count."""
    from pipeline import steps
    from pipeline.config import DatasetSpec
    from pipeline.sharding import Shard

    day = parse_date(args.date)
    if args.shard:
        shard = Shard.parse(args.shard)
        folder = steps.score_shard(args.dataset, day, shard)
        _print(f"shard {shard} written to {folder}; commit the day with tsad finalize")
        return
    shards = args.shards or DatasetSpec.load(args.dataset).scoring.shards
    if shards == 1:
        scores = steps.score(args.dataset, day)
    else:
        scores = steps.score_sharded(args.dataset, day, shards)
    _print(f"scores written to {scores}")
    _deliver(args.dataset, day)


def cmd_finalize(args: argparse.Namespace) -> None:
    """Commit a day whose shards were scored apart (``tsad score --shard K/N``)."""
    from pipeline import steps
    from pipeline.config import DatasetSpec

    day = parse_date(args.date)
    shards = args.shards or DatasetSpec.load(args.dataset).scoring.shards
    _print(f"scores written to {steps.finalize(args.dataset, day, shards)}")
    _deliver(args.dataset, day)


def _deliver(dataset: str, day: dt.date) -> None:
    from pipeline import steps

    for table, rows in steps.deliver(dataset, day).items():
        _print(f"{rows} rows delivered to table {table}")


def cmd_notify(args: argparse.Namespace) -> None:
    from pipeline import steps

    sent = steps.notify(args.dataset, parse_date(args.date), via=args.via)
    _print(f"sent {sent['subject']!r} to {', '.join(sent['to'])}")


def cmd_review(args: argparse.Namespace) -> None:
    from pathlib import Path

    from pipeline.steps import reviews

    if args.csv:
        if args.date or args.episode or args.label or args.note or args.by:
            raise ValueError("--import reads every verdict from the file: give no --date etc.")
        stored = reviews.import_csv(args.dataset, Path(args.csv))
    else:
        missing = [f"--{name}" for name in ("date", "episode", "label") if not vars(args)[name]]
        if missing:
            raise ValueError(f"give {', '.join(missing)} (or --import a CSV of verdicts)")
        stored = reviews.review(
            args.dataset, parse_date(args.date), args.episode, args.label, args.note, args.by
        )
    for day, recorded in stored.items():
        _print(
            f"{args.dataset} {day}: {recorded['verdicts']} verdict(s) stored in {recorded['file']}"
        )


def cmd_promote(args: argparse.Namespace) -> None:
    from pipeline import steps

    if args.version is not None:
        decision = steps.promote_version(args.dataset, args.version)
    else:
        decision = steps.promote_challenger(args.dataset, metric=args.metric)
    _print(decision.to_dict())


def cmd_demo(args: argparse.Namespace) -> None:
    if args.dataset == "transactions":
        from pipeline import demo_transactions

        demo_transactions.run(epochs=args.epochs, accounts=args.accounts)
    else:
        from pipeline import demo

        demo.run(epochs=args.epochs, patients=args.patients, days=args.days)


def cmd_bench(args: argparse.Namespace) -> None:
    from pathlib import Path

    from pipeline import benchmark

    results, skipped = benchmark.run(
        Path(args.data_root),
        _names(args.datasets),
        _names(args.detectors),
        Path(args.out),
        save_scores=Path(args.save_scores) if args.save_scores else None,
        epochs=args.epochs,
        device=args.device,
        seed=args.seed,
        series_names=_names(args.series) if args.series else None,
        jobs=args.jobs,
    )
    _print(benchmark.markdown_table(results, skipped))
    failed = benchmark.failures(results)
    if failed:
        raise RuntimeError(
            f"{failed} detector run(s) failed (their errors are in {args.out} and above); "
            "the other rows finished"
        )


def _names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


def _positive(value: str) -> int:
    """An argument that must be a whole number of at least 1 (a count of workers)."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def cmd_detectors(args: argparse.Namespace) -> None:
    from pipeline.detectors.registry import DETECTORS

    for name, cls in sorted(DETECTORS.items()):
        summary = (cls.__doc__ or "").strip().splitlines()[0]
        params = ", ".join(
            f"{key}={field.default!r}" for key, field in cls.Config.model_fields.items()
        )
        print(f"{name:<20} {summary}\n{'':<20} {params}")


def cmd_airflow_env(args: argparse.Namespace) -> None:
    from pipeline.config import Settings
    from pipeline.orchestration import airflow_environment

    for key, value in airflow_environment(Settings.from_env()).items():
        print(f"export {key}={value!r}".replace("'", '"'))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tsad", description="Time-series anomaly detection: train, register and score."
    )
    parser.add_argument("--version", action="version", version=f"tsad {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show the libraries' logs and warnings (MLflow, Great Expectations)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _add_data_commands(commands)
    _add_model_commands(commands)
    _add_tool_commands(commands)
    return parser


DEMO_DATASETS = ("vitals", "transactions")
Commands = argparse._SubParsersAction  # what add_subparsers returns; argparse names it privately


def _add_data_commands(commands: Commands) -> None:
    """Commands on daily partitions: write demo days; ingest, validate, score or notify one."""
    generate = commands.add_parser("generate", help="write synthetic demo data (landing days)")
    generate.add_argument("--dataset", choices=DEMO_DATASETS, default="vitals")
    generate.add_argument("--start", default=None, help="default 2026-01-01 (transactions: 02-02)")
    generate.add_argument("--days", type=int, default=9)
    generate.add_argument("--patients", type=int, default=8, help="vitals only")
    generate.add_argument("--accounts", type=int, default=3000, help="transactions only")
    generate.add_argument(
        "--incidents-per-1000",
        type=float,
        default=20.0,
        help="transactions only: fraud incidents a labeled day holds per 1,000 accounts",
    )
    generate.add_argument("--labeled-from", default=None, help="default: the run config's")
    generate.add_argument("--seed", type=int, default=7)
    generate.set_defaults(handler=cmd_generate)

    for name, handler, text in (
        ("ingest", cmd_ingest, "snapshot one day from the dataset's source into landing"),
        ("validate", cmd_validate, "validate one landed day (quarantine it if it fails)"),
        ("score", cmd_score, "score one day with the @production model, fill its sinks"),
        ("finalize", cmd_finalize, "commit a day scored as shards, fill its sinks"),
        ("notify", cmd_notify, "send a scored day's digest to the dataset's owners"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("--dataset", required=True)
        command.add_argument("--date", required=True, help="YYYY-MM-DD")
        command.set_defaults(handler=handler)
    score, finalize = commands.choices["score"], commands.choices["finalize"]
    sharding = score.add_mutually_exclusive_group()
    sharding.add_argument(
        "--shards",
        type=_positive,
        help="score the day as N entity shards in this process, then commit it "
        "(default: the spec's scoring.shards)",
    )
    sharding.add_argument(
        "--shard", metavar="K/N", help="score shard K (from 0) of N alone; tsad finalize commits"
    )
    finalize.add_argument(
        "--shards", type=_positive, help="the day's shard count (default: the spec's)"
    )
    commands.choices["notify"].add_argument(
        "--via",
        choices=("email", "slack"),
        default="email",
        help="email: the owners through smtp_default; slack: the dataset's channel through "
        "slack_default",
    )

    review = commands.add_parser(
        "review", help="record a reviewer's verdict on an alarm episode (or import a CSV)"
    )
    review.add_argument("--dataset", required=True)
    review.add_argument("--date", help="YYYY-MM-DD: the scored day listing the episode")
    review.add_argument("--episode", help="the episode_id of alarms.parquet / the report")
    review.add_argument("--label", help=" or ".join(REVIEW_LABELS))
    review.add_argument("--note", help="free text kept with the verdict")
    review.add_argument("--by", help="the reviewer (default: the current user)")
    review.add_argument(
        "--import", dest="csv", help="a CSV of verdicts: date,episode_id,label[,note][,by]"
    )
    review.set_defaults(handler=cmd_review)


def _add_model_commands(commands: Commands) -> None:
    """Commands that make and govern models: train one, promote one."""
    train = commands.add_parser("train", help="validate, train, calibrate, evaluate, register")
    train.add_argument("--run-config", dest="run_config", default="vitals")
    train.add_argument("--dataset")
    train.add_argument("--detector")
    train.add_argument("--epochs", type=int)
    train.add_argument("--window", type=int)
    train.add_argument("--calibration", choices=CALIBRATION_METHODS)
    train.add_argument("--device", choices=DEVICES)
    train.set_defaults(handler=cmd_train)

    promote = commands.add_parser(
        "promote", help="gate the challenger against @production, or promote a version by hand"
    )
    promote.add_argument("--dataset", required=True)
    promote.add_argument("--version", help="promote this version by hand")
    promote.add_argument(
        "--metric",
        choices=PROMOTION_METRICS,
        help="gate metric (default: the challenger run's promotion_metric, vus_pr unless set)",
    )
    promote.set_defaults(handler=cmd_promote)


def _add_tool_commands(commands: Commands) -> None:
    """The demo, the benchmark, the detector list and the Airflow environment."""
    demo = commands.add_parser("demo", help="the whole loop through Airflow on demo data")
    demo.add_argument("--epochs", type=int, default=None)
    demo.add_argument("--dataset", choices=DEMO_DATASETS, default="vitals")
    demo.add_argument("--accounts", type=int, default=None, help="transactions only")
    demo.add_argument("--patients", type=int, default=None, help="vitals only")
    demo.add_argument(
        "--days", type=int, default=None, help="vitals only: days generated (at least 8)"
    )
    demo.set_defaults(handler=cmd_demo)

    bench = commands.add_parser("bench", help="benchmark detectors on public labeled data")
    bench.add_argument("--data-root", required=True, help="folder holding SMD/, ASD/, NAB/ ...")
    bench.add_argument("--datasets", required=True, help="comma-separated, e.g. SMD,ASD")
    bench.add_argument(
        "--detectors",
        default="pca,transformer_ae",
        help="comma-separated; 'auto' chooses per series among the CPU-fast detectors on the "
        "calibration part, 'auto:a,b,...' (last) among the named ones",
    )
    bench.add_argument("--series", help="comma-separated series names, e.g. machine-1-6,omi-1")
    bench.add_argument("--out", default="results.csv")
    bench.add_argument("--save-scores", help="write one .npz of scores per series and detector")
    bench.add_argument("--epochs", type=int, help="override every torch detector's epochs")
    bench.add_argument("--device", choices=DEVICES, default="auto")
    bench.add_argument("--seed", type=int, default=0, help="seed of every detector's randomness")
    bench.add_argument(
        "--jobs",
        type=_positive,
        default=1,
        help="series run in parallel worker processes, each with its share of the cores",
    )
    bench.set_defaults(handler=cmd_bench)

    detectors = commands.add_parser("detectors", help="list detectors and hyper-parameters")
    detectors.set_defaults(handler=cmd_detectors)

    env = commands.add_parser("airflow-env", help="print the Airflow environment as exports")
    env.set_defaults(handler=cmd_airflow_env)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_output(args.verbose)
    try:
        args.handler(args)
    except Exception as exc:  # the CLI's one place that turns any failure into a message
        if os.environ.get("TSAD_DEBUG"):
            raise
        message = f"tsad {args.command} failed: {type(exc).__name__}: {exc}"
        print(
            textwrap.fill(message, width=100, break_long_words=False, replace_whitespace=False),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
