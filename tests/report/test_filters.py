"""Report filters: patterns, suites and tags through the registry, and --since."""

from __future__ import annotations

from datetime import datetime, timezone

import duckdb
import pytest

from aimbench.cards.registry import Registry
from aimbench.errors import UserError
from aimbench.report.filters import Filters, build_filters, parse_since


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.load()


def matching(filters: Filters) -> list[str]:
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE r AS SELECT * FROM (VALUES ('aim-1b', 'dtd', 'attentive', TIMESTAMP '2026-11-01 10:00'), "
        "('aim-7b', 'pcam', 'linear', TIMESTAMP '2026-11-20 10:00'), ('dinov2-vitg14', 'cifar10', 'official:last', "
        "TIMESTAMP '2026-11-21 10:00')) AS t(backbone, task, probe, created_at)"
    )
    where, params = filters.where()
    return [b for (b,) in con.execute(f"SELECT backbone FROM r WHERE {where} ORDER BY backbone", params).fetchall()]


def test_patterns_and_lists_select_rows(registry: Registry) -> None:
    assert matching(build_filters(registry)) == ["aim-1b", "aim-7b", "dinov2-vitg14"]
    assert matching(build_filters(registry, backbone="aim-*")) == ["aim-1b", "aim-7b"]
    assert matching(build_filters(registry, backbone="aim-7b, dinov2-*")) == ["aim-7b", "dinov2-vitg14"]
    assert matching(build_filters(registry, probe="official:*")) == ["dinov2-vitg14"]
    assert matching(build_filters(registry, task="tag:medical")) == ["aim-7b"]  # pcam is medical, dtd is not
    assert matching(build_filters(registry, task="no-such-task")) == []  # a record's task need not have a card here


def test_a_suite_sets_the_columns_in_the_paper_order(registry: Registry) -> None:
    filters = build_filters(registry, suite="aim15")
    assert filters.tasks[:3] == ("imagenet-1k", "inat-2018", "cifar10") and len(filters.tasks) == 15
    assert filters.order({"infograph", "cifar10", "digits"}) == ["cifar10", "infograph", "digits"]
    both = build_filters(registry, suite="all", task="pcam,dtd")
    assert both.tasks == ("dtd", "pcam")  # the intersection, in the suite's order
    with pytest.raises(UserError, match="no task in common"):
        build_filters(registry, suite="aim15", task="digits")
    with pytest.raises(UserError, match="unknown suite 'aim5'; known suites: aim15, all, smoke"):
        build_filters(registry, suite="aim5")


def test_since_takes_dates_times_and_ages() -> None:
    now = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)
    assert parse_since("2026-11-01") == datetime(2026, 11, 1)
    assert parse_since("2026-11-01T12:00+02:00") == datetime(2026, 11, 1, 10, 0)  # shown in UTC, like created_at
    assert parse_since("7d", now) == datetime(2026, 11, 15, 12, 0)
    assert parse_since("12h", now) == datetime(2026, 11, 22, 0, 0)
    with pytest.raises(UserError, match="neither an ISO date"):
        parse_since("last week")


def test_since_filters_on_the_record_time(registry: Registry) -> None:
    assert matching(Filters(since=datetime(2026, 11, 20))) == ["aim-7b", "dinov2-vitg14"]


def test_an_age_reaching_before_the_year_one_is_one_error() -> None:
    with pytest.raises(UserError, match="--since '9999999999d' reaches back before the year 1"):
        parse_since("9999999999d")
