"""The Breeze fetch against a fake client (no network): codes, chunks, answers, retries, rate,
quota, credentials and the cache it writes."""

from __future__ import annotations

import base64
import datetime as dt
import importlib.util
import io
import itertools
import json
import logging
import os
import random
import stat
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
import requests

from sensequant_assets.sources.breeze import (
    CHUNK_WEEKDAYS,
    BreezeIngestor,
    _replace_atomically,
    chunk_end,
    plan_chunks,
    refresh_from,
)
from sensequant_assets.sources.breeze_client import (
    BreezeApiError,
    BreezeAuthError,
    BreezeSession,
    Credentials,
    RetryPolicy,
    breeze_connect_factory,
    classify_answer,
    credentials_from_env,
)
from sensequant_assets.sources.breeze_codes import CODES_FILE_VAR, StockCodeError, isec_code
from sensequant_assets.sources.breeze_state import CallBudget, StateFile
from sensequant_assets.sources.csv_dir import CsvDirSource

KEY, SECRET, TOKEN = "KEY-k3y9q", "SECRET-s3cr7x", "TOKEN-t0k3nz"
IST = ZoneInfo("Asia/Kolkata")


class FakeClock:
    """Time that moves only when slept on (or moved by the test)."""

    def __init__(self, when: dt.datetime) -> None:
        self.now = when.timestamp()
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def ist(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=IST)


def bar_rows(code: str, first: str, last: str) -> list[dict[str, Any]]:
    """Rows shaped as Breeze answers them (numbers partly as strings), one per weekday."""
    rows = []
    for day in pd.bdate_range(first, last):
        close = 100 + (day.toordinal() % 23) * 0.5
        rows.append(
            {
                "close": close,
                "datetime": f"{day.date()} 00:00:00",
                "exchange_code": "NSE",
                "high": str(close + 1.25),
                "low": close - 1,
                "open": close - 0.5,
                "stock_code": code,
                "volume": 1000 + day.day,
            }
        )
    return rows


def breeze_wrapped(exc: Exception) -> Exception:
    """What breeze-connect raises: a plain Exception whose context is the original error."""
    try:
        raise exc
    except Exception as original:
        try:
            raise Exception(f"Error in get_historical_data_v2(): {original}")
        except Exception as wrapped:
            return wrapped


class FakeBreeze:
    """The two breeze-connect methods. `script` answers the next data calls in order (a dict, or
    an exception to raise); then it answers with bars. `valid` are the tokens it accepts."""

    def __init__(self, script: list[Any] | None = None, valid: set[str] | None = None) -> None:
        self.script = list(script or [])
        self.valid = {TOKEN} if valid is None else valid
        self.sessions: list[str] = []
        self.calls: list[tuple[str, str, str]] = []
        self.token: str | None = None
        self.on_call: Callable[[FakeBreeze], None] | None = None
        self.rows: Callable[[str, str, str], list[dict]] = bar_rows

    def generate_session(self, api_secret: str, session_token: str) -> None:
        assert api_secret == SECRET
        self.sessions.append(session_token)
        if session_token not in self.valid:  # breeze-connect's words, with the token echoed
            raise Exception(f"Unexpected error: Could not authenticate credentials. Token {session_token}")
        self.token = session_token

    def get_historical_data_v2(self, interval, from_date, to_date, stock_code, exchange_code, product_type):
        assert (interval, exchange_code, product_type) == ("1day", "NSE", "cash")
        assert self.token is not None, "called before generate_session"
        self.calls.append((from_date[:10], to_date[:10], stock_code))
        if self.on_call:
            self.on_call(self)
        if self.script:
            answer = self.script.pop(0)
            if isinstance(answer, BaseException):
                raise answer
            return answer
        if self.token not in self.valid:
            return {"Success": None, "Status": 401, "Error": f"Session key {self.token} is expired."}
        return {"Success": self.rows(stock_code, from_date[:10], to_date[:10]), "Status": 200, "Error": None}


def make(
    tmp: Path,
    client: FakeBreeze,
    clock: FakeClock,
    *,
    per_minute: int = 100,
    quota: int = 5000,
    attempts: int = 5,
    credentials: Callable[[], Credentials] | None = None,
    chunk_weekdays: int = CHUNK_WEEKDAYS,
    codes_file: Path | None = None,
) -> BreezeIngestor:
    budget = CallBudget(StateFile(tmp), clock, per_minute, quota)
    session = BreezeSession(
        credentials or (lambda: Credentials(KEY, SECRET, TOKEN)),
        lambda api_key: client if api_key == KEY else pytest.fail("wrong api key"),
        budget,
        clock,
        RetryPolicy(attempts=attempts),
        rng=random.Random(0),
    )
    return BreezeIngestor(session, tmp, clock, codes_file=codes_file, chunk_weekdays=chunk_weekdays)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.csv"))}


@pytest.fixture(autouse=True)
def _no_breeze_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BREEZE_API_KEY", "BREEZE_API_SECRET", "BREEZE_SESSION_TOKEN", "BREEZE_SESSION_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)


JULY = ist(2024, 7, 10, 20, 0)  # after 18:00 IST: 2024-07-10 is the newest complete day


# -- stock codes -------------------------------------------------------------------------------


def test_shipped_codes_map_known_symbols_and_a_user_file_overrides_and_extends(tmp_path: Path) -> None:
    expected = {
        "RELIANCE": "RELIND",
        "LT": "LARTOU",
        "BAJAJ-AUTO": "BAAUTO",
        "TCS": "TCS",
        "INFY": "INFTEC",
        "HDFCBANK": "HDFBAN",
        "ICICIBANK": "ICIBAN",
    }
    assert {s: isec_code(s) for s in expected} == expected
    user = tmp_path / "codes.json"
    user.write_text(json.dumps({"_note": "mine", "TCS": "TCSX", "NEWCO": "NEWCOM"}))
    assert (isec_code("TCS", user), isec_code("newco", user), isec_code("LT", user)) == (
        "TCSX",
        "NEWCOM",
        "LARTOU",
    )


def test_an_unmapped_symbol_is_an_error_naming_the_file_to_edit_and_calls_nothing(tmp_path: Path) -> None:
    with pytest.raises(StockCodeError, match=CODES_FILE_VAR):
        isec_code("NOSUCH")
    user = tmp_path / "codes.json"
    user.write_text("{}")
    client = FakeBreeze()
    with pytest.raises(StockCodeError, match=f"NOSUCH.*add it to {user}"):
        make(tmp_path / "cache", client, FakeClock(JULY), codes_file=user).ingest(
            "NOSUCH", dt.date(2024, 1, 1), dt.date(2024, 6, 30)
        )
    assert client.sessions == [] and client.calls == []
    assert not (tmp_path / "cache" / "NOSUCH").exists()
    user.write_text('{"X": 5}')
    with pytest.raises(StockCodeError, match=f"{user}.*'X'"):
        isec_code("X", user)


# -- chunks --------------------------------------------------------------------------------------


def test_chunks_hold_at_most_980_weekdays_and_tile_the_range() -> None:
    first, last = dt.date(2014, 3, 8), dt.date(2024, 6, 28)  # starts on a Saturday
    chunks = plan_chunks([(first, last)], last)
    weekdays = [int(np.busday_count(a, b + dt.timedelta(days=1))) for a, b in chunks]
    assert chunks[0][0] == first and chunks[-1][1] == last
    assert all(b + dt.timedelta(days=1) == a2 for (_, b), (a2, _) in itertools.pairwise(chunks))
    assert max(weekdays) == CHUNK_WEEKDAYS and all(w <= 1000 - 20 for w in weekdays)
    assert len(chunks) == -(-int(np.busday_count(first, last)) // CHUNK_WEEKDAYS) == 3
    # a call runs on past a short missing range (free rows), but never past the newest day
    assert plan_chunks([(dt.date(2024, 1, 1), dt.date(2024, 1, 31))], dt.date(2024, 7, 10)) == [
        (dt.date(2024, 1, 1), dt.date(2024, 7, 10))
    ]
    assert chunk_end(dt.date(2024, 1, 1), dt.date(2030, 1, 1), weekdays=5) == dt.date(2024, 1, 7)
    # a later missing range already covered by an earlier call's run-on needs no call
    ranges = [(dt.date(2020, 1, 1), dt.date(2020, 1, 10)), (dt.date(2020, 3, 1), dt.date(2020, 3, 5))]
    assert len(plan_chunks(ranges, dt.date(2024, 1, 1))) == 1


def test_a_full_answer_is_split_and_asked_again_rather_than_trusted(tmp_path: Path) -> None:
    client = FakeBreeze()
    # 1,000 rows for the big first call (maybe cut short), normal answers after that
    client.script = [
        {"Success": bar_rows("RELIND", "2018-01-01", "2021-10-29")[:1000], "Status": 200, "Error": None}
    ]
    # calls of 150 weekdays (one covers the range): the rule is the row count, not the call's size
    result = make(tmp_path, client, FakeClock(JULY), chunk_weekdays=150).ingest(
        "RELIANCE", dt.date(2020, 1, 1), dt.date(2020, 6, 30)
    )
    assert len(client.calls) == 3
    (a0, b0, _), (a1, b1, _), (a2, b2, _) = client.calls
    assert (
        a1 == a0
        and b2 == b0
        and dt.date.fromisoformat(b1) + dt.timedelta(days=1) == dt.date.fromisoformat(a2)
    )
    assert result.chunks == [
        (dt.date.fromisoformat(a1), dt.date.fromisoformat(b1)),
        (dt.date.fromisoformat(a2), dt.date.fromisoformat(b2)),
    ]


# -- answers -----------------------------------------------------------------------------------


def test_no_data_and_error_answers_are_never_confused() -> None:
    assert classify_answer({"Success": [], "Status": 200, "Error": None}).kind == "rows"
    assert classify_answer({"Success": None, "Status": 200, "Error": None}).rows == []
    for answer, kind in (
        ({"Success": [], "Status": 200, "Error": "No data found for stock code"}, "error"),
        ({"Success": None, "Status": 400, "Error": "Invalid stock code"}, "error"),
        ({"Success": None, "Status": 500, "Error": "Internal error"}, "retry"),
        ({"Success": None, "Status": 429, "Error": "Too many requests"}, "retry"),
        ({"Success": None, "Status": 401, "Error": "Unauthorized"}, "auth"),
        ({"Success": "", "Status": 500, "Error": "Session key is expired."}, "auth"),
        ({"Success": {"x": 1}, "Status": 200, "Error": None}, "error"),
        ({"Success": []}, "error"),  # no Status: not trusted as "no data"
        (None, "error"),
        ("<html>502</html>", "error"),
    ):
        assert classify_answer(answer).kind == kind, answer


def test_an_error_answer_names_symbol_chunk_and_message_and_writes_nothing(tmp_path: Path) -> None:
    client = FakeBreeze(script=[{"Success": None, "Status": 400, "Error": "Invalid stock code INFTEC"}])
    with pytest.raises(BreezeApiError) as err:
        make(tmp_path, client, FakeClock(JULY)).ingest("INFY", dt.date(2024, 1, 1), dt.date(2024, 6, 30))
    message = str(err.value)
    assert "INFY (INFTEC)" in message and "Invalid stock code INFTEC" in message and "Status 400" in message
    assert f"{client.calls[0][0]}..{client.calls[0][1]}" in message
    assert not (tmp_path / "INFY").exists()


def test_a_wrong_stock_code_answering_nothing_is_an_error_naming_symbol_code_and_file(tmp_path: Path) -> None:
    """Breeze answers an unknown code with Status 200 and no rows: never a green, recorded fetch."""
    codes, cache = tmp_path / "codes.json", tmp_path / "cache"
    codes.write_text(json.dumps({"TCS": "TCSX"}))  # a typo in the user's file
    client = FakeBreeze()
    client.rows = lambda code, a, b: []
    for attempt in (1, 2):
        with pytest.raises(
            BreezeApiError, match=r"TCS \(TCSX\): .*no bar for any of the \d+ NSE sessions"
        ) as err:
            make(cache, client, FakeClock(JULY), codes_file=codes, chunk_weekdays=100).ingest(
                "TCS", dt.date(2023, 6, 1), dt.date(2023, 12, 31)
            )
        assert f"Check TCS's code in {codes}" in str(err.value)
        # it looked on to the newest day (a share listed later would answer there), then gave up
        assert client.calls[-1][1] == "2024-07-10" and len(client.calls) == 3 * attempt
        assert not (cache / "TCS").exists()  # no empty <SYMBOL>/1day/ for the csv source to list
        assert "TCS" not in StateFile(cache).read().get("symbols", {})  # asked again next time
    client = FakeBreeze()
    client.rows = lambda code, a, b: []
    with pytest.raises(BreezeApiError, match=r"INFY \(INFTEC\).*isec_codes\.json"):
        make(cache, client, FakeClock(JULY)).ingest("INFY", dt.date(2024, 1, 1), dt.date(2024, 6, 30))
    # a cache with bars that Breeze now answers nothing for (the code was changed to a wrong one)
    make(cache, FakeBreeze(), FakeClock(JULY)).ingest("WIPRO", dt.date(2024, 1, 1), dt.date(2024, 6, 30))
    codes.write_text(json.dumps({"WIPRO": "WIPROX"}))
    with pytest.raises(
        BreezeApiError, match=r"WIPRO \(WIPROX\): Breeze answered none of the \d+ bars the cache"
    ):
        make(cache, client, FakeClock(JULY), codes_file=codes).ingest(
            "WIPRO", dt.date(2024, 1, 1), dt.date(2024, 6, 30)
        )


def test_an_empty_answer_over_sessions_is_never_recorded_and_asked_again(tmp_path: Path) -> None:
    clock = FakeClock(JULY)
    client = FakeBreeze()
    client.rows = lambda code, a, b: bar_rows(code, max(a, "2024-03-01"), b)  # listed on 2024-03-01
    first = make(tmp_path, client, clock, chunk_weekdays=100).ingest(
        "TCS", dt.date(2023, 6, 1), dt.date(2024, 6, 30)
    )
    empty = (dt.date(2023, 6, 1), dt.date.fromisoformat(client.calls[0][1]))
    assert first.unsettled == [empty] and first.added == len(pd.bdate_range("2024-03-01", "2024-07-10"))
    calls = len(client.calls)
    again = make(tmp_path, client, clock, chunk_weekdays=100).ingest(
        "TCS", dt.date(2023, 6, 1), dt.date(2024, 6, 30)
    )
    assert client.calls[calls:] == [(str(empty[0]), str(empty[1]), "TCS")] and again.unsettled == [empty]

    # days Breeze has not published yet come back empty: no error, asked again until they answer
    late = FakeClock(ist(2024, 7, 24, 20, 0))
    client.rows = lambda code, a, b: bar_rows(code, a, min(b, "2024-07-10"))
    make(tmp_path, client, late).ingest("TCS", dt.date(2024, 1, 1), dt.date(2024, 7, 24))
    recorded = StateFile(tmp_path).read()["symbols"]["TCS"]["fetched"]
    assert max(b for _, b in recorded) == "2024-07-10"  # not past the newest bar
    client.rows = bar_rows
    done = make(tmp_path, client, late).ingest("TCS", dt.date(2024, 1, 1), dt.date(2024, 7, 24))
    assert client.calls[-1][:2] == ("2024-07-11", "2024-07-24") and done.added == 10


@pytest.mark.parametrize(
    ("spoil", "rule"),
    [
        (lambda r: r.pop("datetime"), "lacks \\['datetime'\\]"),
        (lambda r: r.update(high=90.0), "high >= low"),
        (lambda r: r.update(stock_code="TCS"), "stock code 'TCS', not RELIND"),
        (lambda r: r.update(datetime="02/01/2024"), "ISO 8601"),
        (lambda r: r.update(close="n/a"), "close must be numeric"),
    ],
)
def test_malformed_rows_fail_naming_symbol_chunk_and_rule_and_write_nothing(
    tmp_path: Path, spoil: Callable[[dict], Any], rule: str
) -> None:
    rows = bar_rows("RELIND", "2024-01-01", "2024-07-10")
    spoil(rows[3])
    client = FakeBreeze(script=[{"Success": rows, "Status": 200, "Error": None}])
    with pytest.raises(BreezeApiError, match=rule) as err:
        make(tmp_path, client, FakeClock(JULY)).ingest("RELIANCE", dt.date(2024, 1, 1), dt.date(2024, 6, 30))
    assert "RELIANCE (RELIND) 2024-01-01..2024-07-10" in str(err.value)
    assert snapshot(tmp_path) == {}


# -- retries, rate, quota ----------------------------------------------------------------------


def _http_error(status: int, retry_after: str | None = None) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = retry_after
    return requests.HTTPError(f"{status} error", response=response)


def test_429_500_and_timeouts_are_retried_with_backoff_honouring_retry_after(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = FakeBreeze(
        script=[
            breeze_wrapped(_http_error(429, retry_after="7")),
            {"Success": None, "Status": 503, "Error": "Service Unavailable"},
            breeze_wrapped(requests.exceptions.ReadTimeout("Read timed out. (read timeout=30)")),
            {"Success": None, "Status": 429, "Error": "Too many requests"},
        ]
    )
    clock = FakeClock(JULY)
    with caplog.at_level(logging.WARNING, "sensequant_assets.sources.breeze"):
        result = make(tmp_path, client, clock).ingest("TCS", dt.date(2024, 1, 1), dt.date(2024, 6, 30))
    assert len(client.calls) == 5 and result.calls == 6  # 5 data calls and the session's
    assert clock.sleeps[0] == 7  # Retry-After, as the server asked
    for retry, slept in enumerate(clock.sleeps[1:], start=1):  # base 1 s * 2**retry, jittered
        assert 2**retry * 0.5 <= slept < 2**retry
    assert result.added == len(pd.bdate_range("2024-01-01", "2024-07-10"))
    assert [r.message.split(":")[0] for r in caplog.records] == [
        "Breeze get_historical_data_v2 TCS (TCS) 2024-01-01..2024-07-10"
    ] * 4

    client = FakeBreeze(script=[breeze_wrapped(requests.exceptions.ConnectTimeout("timed out"))] * 3)
    with pytest.raises(BreezeApiError, match="gave up after 3 attempts: timeout"):
        make(tmp_path / "other", client, FakeClock(JULY), attempts=3).ingest(
            "TCS", dt.date(2024, 1, 1), dt.date(2024, 6, 30)
        )


@pytest.fixture
def real_sdk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[tuple[int, dict[str, str], str]]:
    """breeze-connect's own code (the `breeze` extra) with the network stubbed where it reaches it
    (`requests.get`, `urlopen`); append (HTTP status, headers, body) to script the data calls."""
    if importlib.util.find_spec("breeze_connect") is None:
        pytest.skip(
            "breeze-connect is not installed (the `breeze` extra: .venv/bin/pip install -e '.[breeze]'), "
            "so the real SDK's handling of HTTP statuses is not tested here"
        )
    import urllib.request

    import urllib3.util.connection

    archive = io.BytesIO()
    zipfile.ZipFile(archive, "w").close()  # an empty Security Master

    def urlopen(*args: Any, **kwargs: Any) -> io.BytesIO:
        return io.BytesIO(archive.getvalue())

    answers: list[tuple[int, dict[str, str], str]] = []

    def get(url: str, **kwargs: Any) -> requests.Response:
        response = requests.Response()
        response.url, response.status_code = url, 200
        if "customerdetails" in url.lower():
            token = base64.b64encode(b"USER:SESSION").decode()
            body = json.dumps({"Success": {"session_token": token}, "Status": 200, "Error": None})
        elif "securitymaster" in url.lower():
            body = ""
            response._content = archive.getvalue()
        else:
            response.status_code, headers, body = answers.pop(0)
            response.headers.update(headers)
        if body:
            response._content = body.encode()
        return response

    monkeypatch.chdir(tmp_path)  # its import creates logs/ in the working directory
    monkeypatch.setattr(sys, "path", list(sys.path))  # and puts its own directory on the path
    monkeypatch.setattr(urllib3.util.connection, "HAS_IPV6", urllib3.util.connection.HAS_IPV6)
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)  # its import downloads the Security Master
    monkeypatch.setattr(requests, "get", get)
    try:
        import breeze_connect.breeze_connect as sdk
    except Exception as exc:  # pragma: no cover - a broken install
        pytest.skip(f"breeze-connect is installed but cannot be imported here: {exc}")
    config = sys.modules.get("config")
    if str(getattr(config, "__file__", "")).startswith(os.path.dirname(sdk.__file__)):
        del sys.modules["config"]  # its `import config`, found through the path entry it added
    monkeypatch.setattr(sdk, "urlopen", urlopen)  # each session downloads it again
    return answers


def test_the_real_sdk_path_classifies_by_the_http_status_and_honours_retry_after(
    tmp_path: Path, real_sdk: list[tuple[int, dict[str, str], str]]
) -> None:
    """breeze-connect returns only `response.json()`: the status and Retry-After are kept apart."""
    rows = bar_rows("TCS", "2024-07-01", "2024-07-10")
    real_sdk += [
        (429, {"Retry-After": "7"}, '{"message": "Too Many Requests"}'),  # no Status in the body
        (503, {}, "<html><body>503 Service Unavailable</body></html>"),  # not JSON
        (429, {"Retry-After": "3"}, '{"Success": null, "Status": 429, "Error": "Too many requests"}'),
        (200, {}, json.dumps({"Success": rows, "Status": 200, "Error": None})),
    ]
    clock = FakeClock(JULY)
    session = BreezeSession(
        lambda: Credentials(KEY, SECRET, TOKEN),
        breeze_connect_factory,
        CallBudget(tmp_path / "cache", clock, 100, 5000),
        clock,
        RetryPolicy(attempts=5),
        rng=random.Random(0),
    )
    assert session.daily_rows("TCS", "TCS", "2024-07-01", "2024-07-10") == rows
    assert clock.sleeps[0] == 7 and 1 <= clock.sleeps[1] < 2 and clock.sleeps[2] == 3
    real_sdk.append((401, {}, "<html>401 Authorization Required</html>"))
    with pytest.raises(BreezeAuthError, match="HTTP 401"):
        session.daily_rows("TCS", "TCS", "2024-07-11", "2024-07-12")
    assert real_sdk == [] and len(clock.sleeps) == 3  # a 401 is not retried
    real_sdk.append((400, {}, '{"Success": null, "Status": 400, "Error": "Invalid stock code"}'))
    with pytest.raises(BreezeApiError, match=r"error: HTTP 400: \{.*Invalid stock code") as err:
        session.daily_rows("TCS", "TCS", "2024-07-11", "2024-07-12")
    assert "HTTP 400: HTTP 400" not in str(err.value) and len(clock.sleeps) == 3


def test_the_rate_limit_waits_on_the_injected_clock(tmp_path: Path) -> None:
    client, clock = FakeBreeze(), FakeClock(JULY)
    ingestor = make(tmp_path, client, clock, per_minute=3, chunk_weekdays=5)
    stamps: list[float] = []
    client.on_call = lambda _: stamps.append(clock.time())
    result = ingestor.ingest("TCS", dt.date(2024, 1, 1), dt.date(2024, 2, 9))  # 6 weeks: 6 calls
    assert len(client.calls) == 6 and result.calls == 7  # and the session's
    times = [JULY.timestamp(), *stamps]  # the session was the first call, at the start
    for t in times:  # never more than 3 calls in any minute
        assert sum(1 for u in times if t <= u < t + 60) <= 3
    assert times[3] >= times[0] + 60 and times[6] >= times[3] + 60
    assert sum(clock.sleeps) == ingestor.session.budget.waited >= 120


def test_the_quota_stops_the_fetch_and_the_next_day_resumes_where_it_stopped(tmp_path: Path) -> None:
    client, clock = FakeBreeze(), FakeClock(JULY)
    first = make(tmp_path, client, clock, quota=3, chunk_weekdays=20).ingest(
        "TCS", dt.date(2024, 1, 1), dt.date(2024, 6, 30)
    )
    assert first.stopped and "SENSEQUANT_BREEZE_DAILY_QUOTA=3" in first.stopped
    assert first.calls == 3 and len(client.calls) == 2  # the session took one
    done = pd.bdate_range("2024-01-01", client.calls[-1][1])
    assert first.added == len(done) == len(snapshot(tmp_path))
    assert first.chunks[-1][1] == dt.date.fromisoformat(client.calls[-1][1])

    clock.now = ist(2024, 7, 11, 20, 0).timestamp()  # the next day: a new quota
    again = FakeBreeze()
    second = make(tmp_path, again, clock, quota=3, chunk_weekdays=400).ingest(
        "TCS", dt.date(2024, 1, 1), dt.date(2024, 6, 30)
    )
    resumed = dt.date.fromisoformat(client.calls[-1][1]) + dt.timedelta(days=1)
    assert second.stopped is None and again.calls[0][0] == resumed.isoformat()
    assert len(again.calls) == 1 and second.added == len(pd.bdate_range(resumed, "2024-07-11"))


def test_a_rerun_fetches_only_what_is_missing_or_recent(tmp_path: Path) -> None:
    client, clock = FakeBreeze(), FakeClock(JULY)
    make(tmp_path, client, clock).ingest("TCS", dt.date(2024, 1, 1), dt.date(2024, 6, 30))
    assert len(client.calls) == 1
    again = make(tmp_path, client, clock).ingest("TCS", dt.date(2024, 1, 1), dt.date(2024, 6, 30))
    assert (again.calls, len(client.sessions)) == (0, 1)  # nothing missing: not even a session
    recent = make(tmp_path, client, clock).ingest("TCS", dt.date(2024, 1, 1), dt.date(2024, 7, 10))
    assert client.calls[-1][:2] == ("2024-07-04", "2024-07-10")  # the last 5 sessions, asked again
    assert (recent.calls, recent.added, recent.unchanged) == (2, 0, 5)
    older = make(tmp_path, client, clock).ingest("TCS", dt.date(2023, 10, 1), dt.date(2024, 6, 30))
    assert client.calls[-1][0] == "2023-10-01" and older.added == len(
        pd.bdate_range("2023-10-02", "2023-12-31")
    )


def test_refresh_days_count_nse_sessions_not_calendar_days() -> None:
    assert refresh_from(dt.date(2024, 7, 10), 5) == dt.date(2024, 7, 4)  # across a weekend
    # Monday 2024-08-19 after Independence Day (Thursday 15th) and a weekend: still five sessions
    assert refresh_from(dt.date(2024, 8, 19), 5) == dt.date(2024, 8, 12)
    assert refresh_from(dt.date(2024, 7, 14), 1) == dt.date(2024, 7, 12)  # a Sunday: Friday's
    assert refresh_from(dt.date(2024, 7, 10), 0) == dt.date(2024, 7, 11)  # nothing asked again


def test_a_deleted_day_file_is_fetched_again_and_deleting_the_record_keeps_the_quota(tmp_path: Path) -> None:
    clock = FakeClock(JULY)
    client = FakeBreeze()
    client.rows = lambda code, a, b: [r for r in bar_rows(code, a, b) if r["datetime"][:10] != "2024-03-05"]
    make(tmp_path, client, clock).ingest("TCS", dt.date(2024, 1, 1), dt.date(2024, 6, 30))
    gone = tmp_path / "TCS" / "1day" / "2024-03-01.csv"
    gone.unlink()  # the user removes a bad file to have it fetched again
    again = make(tmp_path, client, clock).ingest("TCS", dt.date(2024, 1, 1), dt.date(2024, 6, 30))
    assert (again.calls, again.added, again.refetched) == (2, 1, 1) and gone.is_file()
    assert client.calls[-1][0] == "2024-03-01"
    # 2024-03-05, which Breeze answered without a bar, is not asked for again
    assert make(tmp_path, client, clock).ingest("TCS", dt.date(2024, 1, 1), dt.date(2024, 6, 30)).calls == 0

    (tmp_path / ".breeze" / "state.json").unlink()  # to have everything asked again: not the quota
    used = json.loads((tmp_path / ".breeze" / "calls.json").read_text())["quota"]["calls"]
    assert used == 4
    stopped = make(tmp_path, client, clock, quota=4).ingest("TCS", dt.date(2024, 1, 1), dt.date(2024, 6, 30))
    assert stopped.stopped and "SENSEQUANT_BREEZE_DAILY_QUOTA=4" in stopped.stopped


def test_cache_and_state_files_get_an_ordinary_mode_and_are_synced_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sensequant_assets.sources.breeze_state as state_module

    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(state_module.os, "fsync", fsync)
    monkeypatch.setattr(state_module.os, "replace", replace)
    old = os.umask(0o022)
    try:
        make(tmp_path, FakeBreeze(), FakeClock(JULY)).ingest("TCS", dt.date(2024, 7, 1), dt.date(2024, 7, 10))
        os.umask(0o027)
        state_module.replace_atomically(tmp_path / "strict.csv", b"x")
    finally:
        os.umask(old)
    modes = {
        p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode)
        for p in tmp_path.rglob("*")
        if p.is_file() and not p.name.endswith(".lock")
    }
    assert modes.pop("strict.csv") == 0o640  # the umask is respected
    assert set(modes.values()) == {0o644} and {".breeze/state.json", ".breeze/calls.json"} <= set(modes)
    assert len(modes) == 2 + 8  # no temporary file left
    # each file flushed to disk before its rename; a day's directory synced once after its files,
    # a state file's after it
    assert all(a == "fsync file" for a, b in itertools.pairwise(events) if b == "replace")
    assert "|".join(["fsync file|replace"] * 8 + ["fsync dir"]) in "|".join(events)
    assert events[-3:] == ["fsync file", "replace", "fsync dir"]


# -- credentials ----------------------------------------------------------------------------------


def test_a_rejected_session_is_an_auth_error_and_writes_nothing(tmp_path: Path) -> None:
    client = FakeBreeze(valid={"another"})
    with pytest.raises(BreezeAuthError, match="rejected the credentials") as err:
        make(tmp_path, client, FakeClock(JULY)).ingest("TCS", dt.date(2024, 1, 1), dt.date(2024, 6, 30))
    assert client.calls == [] and snapshot(tmp_path) == {}
    assert TOKEN not in str(err.value) and "BREEZE_SESSION_TOKEN_FILE" in str(err.value)

    client = FakeBreeze(script=[{"Success": None, "Status": 401, "Error": "Unauthorized"}])
    with pytest.raises(BreezeAuthError, match=r"TCS \(TCS\) .*401: Unauthorized"):
        make(tmp_path, client, FakeClock(JULY)).ingest("TCS", dt.date(2024, 1, 1), dt.date(2024, 6, 30))
    assert len(client.calls) == 1 and snapshot(tmp_path) == {}


def test_a_token_renewed_in_the_token_file_is_picked_up_without_a_restart(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    client = FakeBreeze()

    def expire_and_renew(fake: FakeBreeze) -> None:  # the token expires; the user writes a new one
        if len(fake.calls) == 1:
            fake.valid = {"TOKEN-renewed"}
            token_file.write_text("TOKEN-renewed")

    client.on_call = expire_and_renew
    ingestor = make(
        tmp_path / "cache",
        client,
        FakeClock(JULY),
        credentials=lambda: credentials_from_env(KEY, SECRET, token_file=str(token_file)),
    )
    result = ingestor.ingest("TCS", dt.date(2024, 1, 1), dt.date(2024, 6, 30))
    assert client.sessions == [TOKEN, "TOKEN-renewed"] and len(client.calls) == 2
    assert result.added == len(pd.bdate_range("2024-01-01", "2024-07-10"))


def test_no_credential_reaches_a_log_record_an_exception_or_a_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = FakeBreeze(
        script=[
            {"Success": None, "Status": 503, "Error": f"gateway saw session {TOKEN} and key {KEY}"},
            breeze_wrapped(requests.exceptions.ConnectionError(f"failed for apikey={KEY}")),
        ]
    )
    client.on_call = lambda fake: fake.valid.clear() if len(fake.calls) == 3 else None  # then 401
    with caplog.at_level(logging.DEBUG), pytest.raises(BreezeAuthError) as err:
        make(tmp_path, client, FakeClock(JULY), chunk_weekdays=50).ingest(
            "TCS", dt.date(2023, 1, 1), dt.date(2024, 6, 30)
        )
    assert len(caplog.records) >= 2
    texts = [caplog.text, str(err.value), repr(err.value), *(r.getMessage() for r in caplog.records)]
    files = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    for secret in (KEY, SECRET, TOKEN):
        assert not any(secret in text for text in texts), secret
        assert not any(secret.encode() in data for data in files), secret
    assert "***" in caplog.text and "Session key *** is expired" in str(err.value)
    assert repr(Credentials(KEY, SECRET, TOKEN)) == "Credentials()"


# -- the cache -------------------------------------------------------------------------------------


def test_the_cache_is_what_the_csv_source_reads(tmp_path: Path) -> None:
    client = FakeBreeze()
    make(tmp_path, client, FakeClock(JULY)).ingest("BAJAJ-AUTO", dt.date(2024, 1, 1), dt.date(2024, 6, 30))
    first = (tmp_path / "BAJAJ-AUTO" / "1day" / "2024-01-01.csv").read_text()
    assert (
        first
        == "timestamp,open,high,low,close,volume\n2024-01-01 00:00:00+05:30,105,106.75,104.5,105.5,1001\n"
    )
    bars = CsvDirSource(tmp_path).bars("BAJAJ-AUTO", dt.date(2024, 1, 1), dt.date(2024, 6, 30))
    rows = bar_rows("BAAUTO", "2024-01-01", "2024-06-30")
    assert len(bars) == len(rows)
    assert np.allclose(bars["high"].to_numpy(), [float(r["high"]) for r in rows], rtol=0, atol=0)
    assert bars.index[0] == pd.Timestamp("2024-01-01", tz="Asia/Kolkata")
    fingerprints = CsvDirSource(tmp_path).window_fingerprints(
        "BAJAJ-AUTO", [(dt.date(2024, 1, 1), dt.date(2024, 6, 30))]
    )
    assert fingerprints[dt.date(2024, 1, 1)] is not None  # the new_data sensor sees a complete window


def test_only_changed_days_are_rewritten_by_rename_and_other_days_are_kept(tmp_path: Path) -> None:
    folder = tmp_path / "TCS" / "1day"
    folder.mkdir(parents=True)
    rows = {r["datetime"][:10]: r for r in bar_rows("TCS", "2024-01-01", "2024-01-05")}
    same = folder / "2024-01-02.csv"  # the same bar, spelled differently: left alone
    r = rows["2024-01-02"]
    same.write_text(
        "timestamp,open,high,low,close,volume\n"
        f"2024-01-02 00:00:00+05:30,{r['open']:.4f},{r['high']},{r['low']},{r['close']},{r['volume']}.0\n"
    )
    wrong = folder / "2024-01-03.csv"
    wrong.write_text("timestamp,open,high,low,close,volume\n2024-01-03 00:00:00+05:30,1,2,0.5,1.5,10\n")
    extra = folder / "2023-12-29.csv"  # a day Breeze does not answer: never removed
    extra.write_text("timestamp,open,high,low,close,volume\n2023-12-29 00:00:00+05:30,1,2,0.5,1.5,10\n")
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()}
    client = FakeBreeze()
    client.rows = lambda code, a, b: bar_rows(code, "2024-01-01", "2024-01-05")
    result = make(tmp_path, client, FakeClock(JULY)).ingest("TCS", dt.date(2024, 1, 1), dt.date(2024, 1, 5))
    assert (result.added, result.corrected, result.unchanged) == (3, 1, 1)
    assert (same.stat().st_ino, same.stat().st_mtime_ns, same.read_bytes()) == before[same.name]
    assert (extra.stat().st_ino, extra.read_bytes()) == before[extra.name][::2]
    assert wrong.stat().st_ino != before[wrong.name][0]  # replaced by a rename, not rewritten in place
    fixed = CsvDirSource(tmp_path).bars("TCS", dt.date(2024, 1, 3), dt.date(2024, 1, 3))
    assert fixed["close"].tolist() == [rows["2024-01-03"]["close"]]
    assert sorted(p.name for p in folder.iterdir()) == [
        "2023-12-29.csv",
        *(f"2024-01-0{d}.csv" for d in range(1, 6)),
    ]

    target = folder / "2024-01-04.csv"
    kept = target.read_bytes()
    with pytest.raises(TypeError):
        _replace_atomically(target, object())  # type: ignore[arg-type]  # the write fails half-way
    assert target.read_bytes() == kept and sorted(folder.iterdir()) == sorted(folder.glob("*.csv"))


def test_a_failed_fetch_leaves_the_cache_byte_identical(tmp_path: Path) -> None:
    clock = FakeClock(JULY)
    make(tmp_path, FakeBreeze(), clock).ingest("TCS", dt.date(2024, 1, 1), dt.date(2024, 6, 30))
    before = snapshot(tmp_path)
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.csv")}
    # an older range in two calls: the first answers corrected bars, the second an error
    changed = [
        dict(r, close=r["close"] + 0.25, high=float(r["high"]) + 0.25)
        for r in bar_rows("TCS", "2023-01-02", "2023-03-03")
    ]
    client = FakeBreeze(
        script=[
            {"Success": changed, "Status": 200, "Error": None},
            {"Success": None, "Status": 400, "Error": "Something else"},
        ]
    )
    with pytest.raises(BreezeApiError, match="Something else"):
        make(tmp_path, client, clock, chunk_weekdays=45).ingest(
            "TCS", dt.date(2023, 1, 1), dt.date(2024, 6, 30)
        )
    assert len(client.calls) == 2
    assert (
        snapshot(tmp_path) == before and {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.csv")} == mtimes
    )


def test_the_readme_says_what_the_breeze_code_does() -> None:
    """The token guidance, the shipped codes and the SDK's log files, as the README states them."""
    from sensequant_assets.sources.breeze_client import LOGIN_HELP
    from sensequant_assets.sources.breeze_codes import load_codes

    root = Path(__file__).resolve().parents[1]
    readme = " ".join((root / "README.md").read_text().split())
    login = "https://api.icicidirect.com/apiuser/login?api_key=<your API key, URL-encoded>"
    assert login in LOGIN_HELP and f"`{login}`" in readme
    assert "apisession" in LOGIN_HELP and "`apisession` value from the address you land on" in readme
    assert "reload" not in LOGIN_HELP and "BREEZE_SESSION_TOKEN and restart Dagster (make run)" in LOGIN_HELP
    assert "a new one needs `make run` restarted with it" in readme
    assert f"Codes for {len(load_codes())} symbols ship" in readme and "The NIFTY 50 codes ship" not in readme
    assert "`logs/apiLogs.log` and `logs/websocketLogs.log`" in readme
    assert "logs/" in (root / ".gitignore").read_text().split()
