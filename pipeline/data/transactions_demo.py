"""Synthetic card transactions with labelled, injected fraud (the payments demo dataset).

Stands in for a card processor's daily export so the payments side of the product can be
exercised without customer data: one row per payment, with what the ``transactions`` spec
describes (time, account, id, amount, currency, merchant and its category, country, whether it
crossed a border, channel).

Normal behaviour has the structure real portfolios have: most accounts are near-dormant (a
payment every few days), most others make a few a day and a few are heavy users; each account
has its own spending level (log-normal amounts), favourite merchant categories and merchants,
and a home country; payments follow a daily rhythm (few at night, peaks at lunch and evening)
and a weekly one (busier weekends).

Fraud is injected as incidents on single accounts, each of one kind:

- ``card_testing``: a burst of tiny online payments at merchants the account never used;
- ``account_takeover``: a few large online payments abroad, at night;
- ``category_shift``: ordinary-sized payments in categories the account never uses;
- ``velocity_spike``: many ordinary payments at familiar merchants within an hour.

Days before ``labeled_from`` carry neither ``label`` nor ``fraud_kind`` and see fewer
incidents (the unlabelled history); later days carry both, so figures can be given per kind.
Every day depends only on the scenario (its seed included). The module does no I/O.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import pandas as pd

from pipeline.config import LABEL, TIMESTAMP

ENTITY_COLUMN = "account_id"
EVENT_ID_COLUMN = "txn_id"
FRAUD_KIND = "fraud_kind"
FraudKind = Literal["card_testing", "account_takeover", "category_shift", "velocity_spike"]
FRAUD_KINDS: tuple[FraudKind, ...] = get_args(FraudKind)

EVERYDAY_CATEGORIES = (
    "grocery",
    "restaurant",
    "fuel",
    "retail",
    "transport",
    "pharmacy",
    "utilities",
    "entertainment",
)
UNUSUAL_CATEGORIES = ("jewelry", "electronics", "gambling", "digital_goods")
CATEGORIES = EVERYDAY_CATEGORIES + UNUSUAL_CATEGORIES
HOME_COUNTRIES = ("US", "GB", "DE", "FR")
FOREIGN_COUNTRIES = ("BR", "NG", "RO", "TH", "MX")
COUNTRIES = HOME_COUNTRIES + FOREIGN_COUNTRIES
CURRENCY_OF = {"US": "USD", "GB": "GBP", "DE": "EUR", "FR": "EUR"}
CURRENCIES = ("USD", "GBP", "EUR")
CHANNELS = ("pos", "online")
ORIGINS = ("domestic", "cross_border")
MERCHANTS_PER_CATEGORY = 400
MAX_AMOUNT = 50_000.0

_SECONDS_PER_DAY = 86_400
# Share of payments per hour of day: quiet nights, a lunch peak and an evening peak.
_HOURLY = np.array(
    [
        *(0.4, 0.2, 0.15, 0.1, 0.1, 0.3, 1.0, 2.0, 3.0, 3.5, 4.0, 4.5),
        *(6.0, 5.5, 4.5, 4.0, 4.5, 5.5, 6.5, 6.0, 4.5, 3.0, 1.8, 0.9),
    ]
)
_HOURLY = _HOURLY / _HOURLY.sum()
_WEEKDAY_FACTOR = (0.9, 0.9, 0.95, 1.0, 1.15, 1.3, 1.1)  # Monday first


@dataclass(frozen=True, kw_only=True)
class TransactionsScenario:
    """What to simulate: which days, how many accounts, how much fraud per day.

    ``incidents_per_1000_accounts`` is the labelled days' rate; unlabelled days see
    ``train_fraud_scale`` times as many.
    """

    start: dt.date
    n_days: int
    labeled_from: dt.date
    n_accounts: int = 3_000
    incidents_per_1000_accounts: float = 20.0
    train_fraud_scale: float = 0.2
    seed: int = 0
    first_account: int = 0  # numbers the accounts, so portfolios can be generated in parts
    activity: float = 1.0  # scales every account's payments per day (a busier portfolio)

    def __post_init__(self) -> None:
        if self.n_days < 1 or self.n_accounts < 10:
            raise ValueError("a scenario needs at least one day and ten accounts")
        if not 0.0 <= self.incidents_per_1000_accounts <= 100.0:
            raise ValueError("incidents_per_1000_accounts must be in [0, 100]")

    @property
    def days(self) -> list[dt.date]:
        return [self.start + dt.timedelta(days=offset) for offset in range(self.n_days)]

    def is_labeled(self, day: dt.date) -> bool:
        return day >= self.labeled_from


@dataclass(frozen=True)
class _Accounts:
    """Each account's habits, drawn once for the whole scenario."""

    ids: np.ndarray
    rate: np.ndarray  # payments per day
    spend: np.ndarray  # median amount
    home: np.ndarray  # index into HOME_COUNTRIES
    favourites: np.ndarray  # (account, 3) indices into EVERYDAY_CATEGORIES
    merchants: np.ndarray  # (account, 3) merchant number per favourite category

    @classmethod
    def draw(cls, rng: np.random.Generator, n: int, first: int = 0) -> _Accounts:
        kind = rng.choice(3, n, p=[0.5, 0.42, 0.08])  # near-dormant, regular, heavy
        rate = np.select(
            [kind == 0, kind == 1],
            [rng.uniform(0.03, 0.3, n), rng.lognormal(np.log(2.5), 0.5, n)],
            rng.lognormal(np.log(10.0), 0.4, n),
        )
        width = len(str(first + n))
        numbers = range(first, first + n)
        return cls(
            ids=np.array([f"acct-{number:0{width}d}" for number in numbers], dtype=object),
            rate=rate,
            spend=rng.lognormal(np.log(30.0), 0.7, n),
            home=rng.choice(len(HOME_COUNTRIES), n, p=[0.5, 0.2, 0.15, 0.15]),
            favourites=np.argsort(rng.random((n, len(EVERYDAY_CATEGORIES))), axis=1)[:, :3],
            merchants=rng.integers(0, MERCHANTS_PER_CATEGORY, (n, 3)),
        )


def generate_transactions(scenario: TransactionsScenario) -> dict[dt.date, pd.DataFrame]:
    """One frame of payments per day, in time order (see the module docstring)."""
    streams = np.random.SeedSequence(scenario.seed).spawn(1 + scenario.n_days)
    accounts = _Accounts.draw(
        np.random.default_rng(streams[0]), scenario.n_accounts, scenario.first_account
    )
    return {
        day: _day(scenario, accounts, day, np.random.default_rng(stream))
        for day, stream in zip(scenario.days, streams[1:], strict=True)
    }


def _day(
    scenario: TransactionsScenario, accounts: _Accounts, day: dt.date, rng: np.random.Generator
) -> pd.DataFrame:
    labeled = scenario.is_labeled(day)
    normal = _normal_payments(accounts, day, scenario.activity, rng)
    scale = 1.0 if labeled else scenario.train_fraud_scale
    expected = scenario.incidents_per_1000_accounts * scale * scenario.n_accounts / 1000
    victims = rng.choice(len(accounts.ids), min(rng.poisson(expected), len(accounts.ids)), False)
    frauds = [_incident(accounts, int(victim), rng) for victim in victims]
    frame = pd.concat([normal, *frauds], ignore_index=True)
    seconds = frame.pop("second").to_numpy()
    order = np.argsort(seconds, kind="stable")
    frame = frame.iloc[order].reset_index(drop=True)
    stamps = pd.Timestamp(day, tz="UTC") + pd.to_timedelta(seconds[order], unit="s")
    frame.insert(0, TIMESTAMP, stamps.as_unit("ns"))
    first = scenario.first_account * 100  # ids stay unique across parts of one portfolio
    ids = [f"tx{day:%Y%m%d}-{first + n:09d}" for n in range(len(frame))]
    frame.insert(2, EVENT_ID_COLUMN, ids)
    if not labeled:
        return frame.drop(columns=[LABEL, FRAUD_KIND])
    return frame


def _payments(
    accounts: _Accounts,
    who: np.ndarray,
    seconds: np.ndarray,
    amounts: np.ndarray,
    categories: np.ndarray,
    merchants: np.ndarray,
    countries: np.ndarray,
    online: np.ndarray,
    kind: str = "",
) -> pd.DataFrame:
    """Payments of accounts ``who`` as a frame (``second`` of the day kept for ordering)."""
    home = np.array(HOME_COUNTRIES)[accounts.home[who]]
    country = np.array(COUNTRIES, dtype=object)[countries]
    currency = np.array([CURRENCY_OF.get(code, "USD") for code in HOME_COUNTRIES])
    category = np.array(CATEGORIES, dtype=object)[categories]
    return pd.DataFrame(
        {
            "second": seconds,
            ENTITY_COLUMN: accounts.ids[who],
            "amount": np.clip(np.round(amounts, 2), 0.01, MAX_AMOUNT),
            "currency": currency[accounts.home[who]],
            "merchant_id": [f"{c}-{m:04d}" for c, m in zip(category, merchants, strict=True)],
            "merchant_category": category,
            "country": country,
            "origin": np.where(country == home, "domestic", "cross_border"),
            "channel": np.where(online, "online", "pos"),
            LABEL: int(bool(kind)),
            FRAUD_KIND: kind,
        }
    )


def _normal_payments(
    accounts: _Accounts, day: dt.date, activity: float, rng: np.random.Generator
) -> pd.DataFrame:
    counts = rng.poisson(accounts.rate * activity * _WEEKDAY_FACTOR[day.weekday()])
    who = np.repeat(np.arange(len(accounts.ids)), counts)
    n = len(who)
    seconds = rng.choice(24, n, p=_HOURLY) * 3600 + rng.integers(0, 3600, n)
    favourite = rng.choice(3, n, p=[0.6, 0.3, 0.1])
    familiar = rng.random(n) < 0.8
    merchants = np.where(
        familiar,
        accounts.merchants[who, favourite],
        rng.integers(0, MERCHANTS_PER_CATEGORY, n),
    )
    travelling = rng.random(n) < 0.02
    countries = np.where(travelling, rng.integers(0, len(COUNTRIES), n), accounts.home[who])
    return _payments(
        accounts,
        who,
        seconds,
        accounts.spend[who] * rng.lognormal(0.0, 0.6, n),
        accounts.favourites[who, favourite],
        merchants,
        countries,
        rng.random(n) < 0.3,
    )


def _incident(accounts: _Accounts, victim: int, rng: np.random.Generator) -> pd.DataFrame:
    """One fraud incident of a random kind on account ``victim``, as labelled payments."""
    kind = FRAUD_KINDS[rng.integers(len(FRAUD_KINDS))]
    home = accounts.home[victim]
    unusual = len(EVERYDAY_CATEGORIES) + rng.integers(0, len(UNUSUAL_CATEGORIES))
    spend = accounts.spend[victim]
    if kind == "card_testing":
        n = int(rng.integers(8, 26))
        start = rng.integers(0, _SECONDS_PER_DAY - 1800)
        seconds = start + np.sort(rng.integers(0, 1200, n))
        amounts = rng.uniform(0.5, 2.5, n)
        categories = np.full(n, CATEGORIES.index("digital_goods"))
        merchants = rng.integers(0, MERCHANTS_PER_CATEGORY, n)
        countries = np.full(n, home if rng.random() < 0.5 else _foreign(rng))
        online = np.ones(n, dtype=bool)
    elif kind == "account_takeover":
        n = int(rng.integers(2, 6))
        seconds = rng.integers(3600, 4 * 3600) + np.sort(rng.integers(0, 5400, n))
        amounts = spend * rng.uniform(8.0, 20.0, n)
        categories = np.full(n, unusual)
        merchants = rng.integers(0, MERCHANTS_PER_CATEGORY, n)
        countries = np.full(n, _foreign(rng))
        online = np.ones(n, dtype=bool)
    elif kind == "category_shift":
        n = int(rng.integers(4, 9))
        seconds = rng.integers(9 * 3600, 18 * 3600) + np.sort(rng.integers(0, 3 * 3600, n))
        amounts = spend * rng.lognormal(0.3, 0.4, n)
        categories = np.full(n, unusual)
        merchants = rng.integers(0, MERCHANTS_PER_CATEGORY, n)
        countries = np.full(n, home)
        online = rng.random(n) < 0.3
    else:  # velocity_spike
        n = int(rng.integers(15, 36))
        seconds = rng.integers(8 * 3600, 21 * 3600) + np.sort(rng.integers(0, 3600, n))
        favourite = rng.integers(0, 3, n)
        amounts = spend * rng.lognormal(0.0, 0.6, n)
        categories = accounts.favourites[victim, favourite]
        merchants = accounts.merchants[victim, favourite]
        countries = np.full(n, home)
        online = rng.random(n) < 0.3
    who = np.full(n, victim)
    return _payments(
        accounts, who, seconds, amounts, categories, merchants, countries, online, kind
    )


def _foreign(rng: np.random.Generator) -> int:
    return len(HOME_COUNTRIES) + int(rng.integers(0, len(FOREIGN_COUNTRIES)))
