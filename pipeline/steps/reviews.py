"""The review step: reviewers' verdicts on a scored day's episodes, stored beside the data.

Verdicts go to ``data/reviews/<dataset>/date=YYYY-MM-DD/reviews.parquet``, one file per scored
day holding every verdict given on it (:mod:`pipeline.reviews`); the landing data is never
touched. A day's file is rewritten whole, atomically and under the partition's lock, so two
reviewers at once both keep their verdicts. Verdicts are checked against the day's
``alarms.parquet`` before anything is written; an import of many days writes nothing until
every one of its rows passed.
"""

from __future__ import annotations

import datetime as dt
import getpass
import logging
from pathlib import Path

import pandas as pd

from pipeline import reviews
from pipeline.config import ConfigError, DatasetSpec, RunConfig, Settings, parse_date
from pipeline.daily import ALARMS_FILE
from pipeline.data import io

log = logging.getLogger(__name__)

REVIEWS_FILE = "reviews.parquet"
CSV_COLUMNS = ("date", "episode_id", "label")
CSV_OPTIONAL = ("note", "by")


def review(
    dataset: str,
    day: dt.date,
    episode_id: str,
    label: str,
    note: str | None = None,
    by: str | None = None,
    settings: Settings | None = None,
) -> dict:
    """Record one verdict on one episode of a scored day; returns what was recorded."""
    verdict = pd.DataFrame(
        {
            "episode_id": [episode_id],
            "label": [label],
            "note": [note],
            "reviewed_by": [by or _reviewer()],
            "reviewed_at": [pd.Timestamp.now(tz="UTC")],
        }
    )
    return record(dataset, {day: verdict}, settings)


def import_csv(dataset: str, path: Path, settings: Settings | None = None) -> dict:
    """Record every verdict of a CSV file (``date,episode_id,label[,note][,by]``), or none."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read verdicts from {path}: {exc}") from exc
    missing = [column for column in CSV_COLUMNS if column not in table]
    unknown = [column for column in table if column not in CSV_COLUMNS + CSV_OPTIONAL]
    if missing or unknown or table.empty:
        raise ConfigError(
            f"{path}: expected a header date,episode_id,label[,note][,by] and at least one row"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unknown {', '.join(unknown)}" if unknown else "")
        )
    now = pd.Timestamp.now(tz="UTC")
    verdicts = pd.DataFrame(
        {
            "episode_id": table["episode_id"].str.strip(),
            "label": table["label"].str.strip(),
            "note": table.get("note", pd.Series(None, index=table.index)).replace("", None),
            "reviewed_by": table.get("by", pd.Series("", index=table.index)).replace("", None),
            "reviewed_at": now,
        }
    )
    verdicts["reviewed_by"] = verdicts["reviewed_by"].fillna(_reviewer())
    days = pd.Series(
        [_csv_date(value, line) for line, value in enumerate(table["date"], start=2)],
        index=table.index,
    )
    return record(dataset, {day: given for day, given in verdicts.groupby(days)}, settings)


def _csv_date(value: str, line: int) -> dt.date:
    try:
        return parse_date(value.strip())
    except ConfigError as exc:
        raise ConfigError(f"line {line}: {exc}") from exc


def _reviewer() -> str:
    """Who reviews when no name is given: the account running the command."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def record(
    dataset: str, verdicts: dict[dt.date, pd.DataFrame], settings: Settings | None = None
) -> dict:
    """Check every day's verdicts against its episodes, then append them to its reviews.

    Returns the number of verdicts recorded per day and where they were stored.
    """
    settings = Settings.resolve(settings)
    DatasetSpec.load(dataset)  # an unknown dataset is refused by name
    checked = {
        day: reviews.check(day, given, _listed(settings, dataset, day))
        for day, given in sorted(verdicts.items())
    }
    stored = {}
    for day, new in checked.items():
        target = day_file(settings, dataset, day)
        with io.exclusive_partition(target.parent):
            history = pd.read_parquet(target) if target.is_file() else None
            merged = reviews.appended(history, new)
            io.write_parquet_atomic(merged, target, schema=reviews.REVIEWS_SCHEMA)
        stored[day.isoformat()] = {"verdicts": len(new), "file": str(target)}
    return stored


def _listed(settings: Settings, dataset: str, day: dt.date) -> pd.DataFrame:
    """A scored day's episodes; a day never scored is refused by name."""
    alarms = settings.partition("scores", dataset, day) / ALARMS_FILE
    if not alarms.is_file():
        raise reviews.ReviewRejected(
            f"{dataset} {day} was never scored (no {alarms}): score it, then review its episodes"
        )
    return pd.read_parquet(alarms)


def day_file(settings: Settings, dataset: str, day: dt.date) -> Path:
    """Where a day's review history lives."""
    return settings.partition("reviews", dataset, day) / REVIEWS_FILE


def standing(settings: Settings, dataset: str, days: list[dt.date] | None = None) -> pd.DataFrame:
    """The standing verdicts of ``days`` (every reviewed day when None)."""
    if days is None:
        root = settings.data_root / "reviews" / dataset
        days = sorted(parse_date(path.name.removeprefix("date=")) for path in root.glob("date=*"))
    files = [day_file(settings, dataset, day) for day in days]
    histories = [pd.read_parquet(path) for path in files if path.is_file()]
    if not histories:
        return reviews.empty()
    return reviews.latest(pd.concat(histories, ignore_index=True))


def already_reviewed(settings: Settings, dataset: str, day: dt.date) -> dict[str, str]:
    """Episode id to standing verdict for a day being scored: its own reviews (a rescored day)
    and the day before's (an episode continued across midnight keeps its id)."""
    verdicts = standing(settings, dataset, [day - dt.timedelta(days=1), day])
    newest_last = verdicts.sort_values("reviewed_at", kind="stable")
    return dict(zip(newest_last["episode_id"], newest_last["label"], strict=True))


def for_calibration(settings: Settings, config: RunConfig) -> pd.DataFrame:
    """The standing verdicts a training run calibrates on: those of days it neither trains nor
    tests on (training days teach what is normal; a threshold never sees test days)."""
    verdicts = standing(settings, config.dataset)
    kept = set(config.train.dates()) | set(config.test.dates())
    barred = verdicts["date"].isin([day.isoformat() for day in kept])
    for day in sorted(set(verdicts.loc[barred, "date"])):
        log.warning("%s: reviews of %s not used, a training or test day", config.dataset, day)
    return verdicts[~barred].reset_index(drop=True)
