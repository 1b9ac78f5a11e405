"""Downloads against a real HTTP server on 127.0.0.1 that cuts, stalls, changes and refuses.

Every case ends in a complete, verified file after retries, or in one ``UserError`` line naming
the URL and what to do; never a traceback, never a wrong file kept. Backoff goes through an
injected ``sleep`` that only records its waits, so no test waits on the wall clock; the stall
case alone relies on a 0.2 s socket timeout, and no assertion depends on timing.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from flaky_server import CHANGE, CHUNKED_CUT, CUT, CUT_NO_LENGTH, FULL, IGNORE_RANGE, SLOW, STALL, FlakyServer, Plan, flaky_server

from aimbench.cards.task_card import Download
from aimbench.data.download import Retry, fetch, part_of
from aimbench.data.progress import PlainMeter
from aimbench.errors import UserError

CONTENT = os.urandom(100_000)


@pytest.fixture
def server() -> Iterator[FlakyServer]:
    with flaky_server() as running:
        yield running


@pytest.fixture
def waits() -> list[float]:
    return []


@pytest.fixture
def retry(waits: list[float]) -> Retry:
    return Retry(attempts=3, backoff_s=1.0, timeout_s=5.0, sleep=waits.append)


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def card(url: str, content: bytes = CONTENT, checksum: bool = True, size: bool = False) -> Download:
    return Download(url, "file.bin", md5(content) if checksum else None, None, 0, len(content) if size else None)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_stream_cut_after_10_of_100000_announced_bytes_resumes_where_it_stopped(tmp_path: Path, server, retry, waits) -> None:
    plan = Plan(CONTENT, [CUT, FULL], cut=10)
    path = fetch(card(server.serve("f", plan)), tmp_path, retry)
    assert path.read_bytes() == CONTENT
    assert plan.seen == [None, "bytes=10-"] and plan.sent == len(CONTENT)  # not one byte fetched twice
    assert waits == [1.0] and leftovers(tmp_path) == ["file.bin"]


@pytest.mark.parametrize("verified_by", ["size", "checksum"])
def test_a_cut_without_content_length_is_caught_by_the_card(tmp_path: Path, server, retry, verified_by: str) -> None:
    """A close-delimited stream ends like a complete one: the card's size resumes it, a checksum
    alone can only reject it and fetch it again from the start."""
    plan = Plan(CONTENT, [CUT_NO_LENGTH, FULL], cut=5000)
    download = card(server.serve("f", plan), checksum=verified_by == "checksum", size=verified_by == "size")
    assert fetch(download, tmp_path, retry).read_bytes() == CONTENT
    if verified_by == "size":
        assert plan.seen == [None, "bytes=5000-"] and plan.sent == len(CONTENT)
    else:
        assert plan.seen == [None, None] and plan.sent == len(CONTENT) + 5000


def test_a_chunked_stream_cut_off_is_retried_and_resumed(tmp_path: Path, server, retry) -> None:
    plan = Plan(CONTENT, [CHUNKED_CUT, FULL], cut=30_000)
    assert fetch(card(server.serve("f", plan)), tmp_path, retry).read_bytes() == CONTENT
    assert plan.seen == [None, "bytes=30000-"]


def test_a_server_that_ignores_range_gets_a_clean_restart(tmp_path: Path, server, retry) -> None:
    plan = Plan(CONTENT, [CUT, IGNORE_RANGE], cut=40_000)
    assert fetch(card(server.serve("f", plan)), tmp_path, retry).read_bytes() == CONTENT
    assert plan.seen == [None, "bytes=40000-"] and plan.sent == 40_000 + len(CONTENT)


@pytest.mark.parametrize(
    ("etag", "new_length"),
    [('"v1"', 100_000), (None, 90_000), (None, 100_000)],
    ids=["etag-changed", "size-changed", "no-validator-same-size"],
)
def test_a_file_that_changes_between_attempts_ends_as_the_new_file(tmp_path: Path, server, retry, etag, new_length) -> None:
    """If-Range sends the new file whole; without validators a new size restarts, and a same-size
    change leaves a mixed file that the checksum rejects before a clean refetch."""
    new = os.urandom(new_length)
    plan = Plan(CONTENT, [CHANGE, FULL], etag=etag, cut=20_000, next_content=new)
    assert fetch(card(server.serve("f", plan), content=new), tmp_path, retry).read_bytes() == new
    assert leftovers(tmp_path) == ["file.bin"]


def test_404_fails_at_once_naming_the_url_and_what_to_do(tmp_path: Path, server, retry, waits) -> None:
    url = server.serve("f", Plan(CONTENT, [404]))
    with pytest.raises(UserError) as info:
        fetch(card(url), tmp_path, retry)
    message = str(info.value)
    assert (
        message
        == f"cannot download {url}: HTTP 404 Not Found; the file is not at this address any more: check the task's homepage and update the card's URL"
    )
    assert waits == [] and leftovers(tmp_path) == []


def test_a_500_is_retried_with_backoff(tmp_path: Path, server, retry, waits) -> None:
    plan = Plan(CONTENT, [500, 500, FULL])
    assert fetch(card(server.serve("f", plan)), tmp_path, retry).read_bytes() == CONTENT
    assert waits == [1.0, 2.0]


def test_a_lasting_500_gives_up_after_the_bounded_retries(tmp_path: Path, server, retry, waits) -> None:
    url = server.serve("f", Plan(CONTENT, [500]))
    with pytest.raises(UserError, match=r"HTTP 500 Internal Server Error \(3 retries\); run the same command again later") as info:
        fetch(card(url), tmp_path, retry)
    assert url in str(info.value) and "\n" not in str(info.value)
    assert waits == [1.0, 2.0, 4.0] and leftovers(tmp_path) == []


def test_429_waits_as_long_as_retry_after_says(tmp_path: Path, server, retry, waits) -> None:
    plan = Plan(CONTENT, [429, FULL], retry_after="7")
    assert fetch(card(server.serve("f", plan)), tmp_path, retry).read_bytes() == CONTENT
    assert waits == [7.0]


def test_a_wrong_checksum_is_fetched_once_more_then_deleted(tmp_path: Path, server, retry) -> None:
    plan = Plan(b"not what the card describes")
    url = server.serve("f", plan)
    with pytest.raises(UserError, match=r"md5 is [0-9a-f]{32}, the card publishes " + md5(CONTENT)) as info:
        fetch(card(url), tmp_path, retry)
    assert str(info.value).startswith(url) and "deleted" in str(info.value)
    assert len(plan.seen) == 2 and leftovers(tmp_path) == []


def test_a_stalled_stream_times_out_and_resumes(tmp_path: Path, server, waits) -> None:
    plan = Plan(CONTENT, [STALL, FULL], cut=25_000)
    retry = Retry(attempts=2, backoff_s=1.0, timeout_s=0.2, sleep=waits.append)
    assert fetch(card(server.serve("f", plan)), tmp_path, retry).read_bytes() == CONTENT
    assert plan.seen == [None, "bytes=25000-"] and waits == [1.0]


def test_a_slow_but_steady_server_is_not_a_failure(tmp_path: Path, server, retry, waits) -> None:
    plan = Plan(CONTENT, [SLOW])
    assert fetch(card(server.serve("f", plan)), tmp_path, retry).read_bytes() == CONTENT
    assert waits == [] and len(plan.seen) == 1


def test_a_size_the_server_contradicts_fails_before_streaming(tmp_path: Path, server, retry) -> None:
    url = server.serve("f", Plan(CONTENT))
    download = Download(url, "file.bin", None, None, 0, len(CONTENT) + 1)
    with pytest.raises(UserError, match=r"the server announces 100000 bytes, the card gives 100001; the published file changed"):
        fetch(download, tmp_path, retry)
    assert leftovers(tmp_path) == []


def test_giving_up_keeps_the_part_and_the_next_run_resumes_it(tmp_path: Path, server, waits) -> None:
    plan = Plan(CONTENT, [CUT, CUT, FULL], cut=30_000)
    url = server.serve("f", plan)
    with pytest.raises(
        UserError, match=r"the connection ended after 30000 of 100000 bytes \(0 retries\); 30.0 kB are kept in .*file.bin.part"
    ):
        fetch(card(url), tmp_path, Retry(attempts=0, sleep=waits.append))
    assert leftovers(tmp_path) == ["file.bin.part", "file.bin.part.json"]
    assert fetch(card(url), tmp_path, Retry(attempts=1, sleep=waits.append)).read_bytes() == CONTENT
    assert plan.seen == [None, "bytes=30000-", "bytes=60000-"] and plan.sent == len(CONTENT)


def test_ctrl_c_keeps_a_resumable_part(tmp_path: Path, server, retry) -> None:
    class Interrupting(PlainMeter):
        def advance(self, amount: int) -> None:
            super().advance(amount)
            raise KeyboardInterrupt

    big = os.urandom(3 << 20)  # bigger than one read: Ctrl-C lands mid-file
    plan = Plan(big)
    url = server.serve("f", plan)
    with pytest.raises(KeyboardInterrupt):
        fetch(card(url, content=big), tmp_path, retry, Interrupting(lambda _: None))
    held = part_of(tmp_path / "file.bin").stat().st_size
    assert 0 < held < len(big) and not (tmp_path / "file.bin").exists()
    assert fetch(card(url, content=big), tmp_path, retry).read_bytes() == big
    assert plan.seen == [None, f"bytes={held}-"]


def test_a_complete_part_the_server_refuses_to_resume_is_finished_without_a_byte(tmp_path: Path, server, retry) -> None:
    """Stopped between the last byte and the rename, with no size known: HTTP 416 says it is complete."""
    plan = Plan(CONTENT)
    url = server.serve("f", plan)
    part = part_of(tmp_path / "file.bin")
    part.write_bytes(CONTENT)
    part.with_name(part.name + ".json").write_text(f'{{"url": "{url}", "total": null, "etag": null, "last_modified": null}}')
    assert fetch(card(url), tmp_path, retry).read_bytes() == CONTENT
    assert plan.seen == [f"bytes={len(CONTENT)}-"] and plan.sent == 0


def test_a_part_from_another_url_is_not_resumed(tmp_path: Path, server, retry) -> None:
    plan = Plan(CONTENT)
    url = server.serve("f", plan)
    part = part_of(tmp_path / "file.bin")
    part.write_bytes(b"x" * 500)
    part.with_name(part.name + ".json").write_text('{"url": "http://elsewhere/f", "total": 1000}')
    assert fetch(card(url), tmp_path, retry).read_bytes() == CONTENT
    assert plan.seen == [None]


def test_a_kept_download_is_verified_again_before_reuse(tmp_path: Path, server, retry) -> None:
    plan = Plan(CONTENT)
    url = server.serve("f", plan)
    (tmp_path / "file.bin").write_bytes(CONTENT)
    assert fetch(card(url), tmp_path, retry).read_bytes() == CONTENT and plan.seen == []  # verified: reused
    (tmp_path / "file.bin").write_bytes(CONTENT[:10])  # a truncated copy, as the old code could leave
    said: list[str] = []
    assert fetch(card(url, size=True, checksum=False), tmp_path, retry, say=said.append).read_bytes() == CONTENT
    assert plan.seen == [None] and "does not verify" in said[0] and "the file has 10 bytes, the card gives 100000" in said[0]


def test_plain_progress_lines_come_at_most_every_period() -> None:
    now = [0.0]
    lines: list[str] = []
    meter = PlainMeter(lines.append, every_s=30.0, clock=lambda: now[0])
    meter.start("big.tar", 100_000_000, 20_000_000)
    for _ in range(8):
        now[0] += 10.0
        meter.advance(10_000_000)
    meter.finish()
    assert lines == [
        "big.tar: 100.0 MB to download, resuming at 20.0 MB",
        "big.tar: 50.0 MB of 100.0 MB (50%), 1.0 MB/s, 50 s left",
        "big.tar: 80.0 MB of 100.0 MB (80%), 1.0 MB/s, 20 s left",
        "big.tar: 100.0 MB of 100.0 MB (100%), 1.0 MB/s, 0 s left",
    ]
