"""Talking to ICICI Direct's Breeze API: credentials, authentication, retries, answer checks.

What breeze-connect does that this module guards against (read from its source, 1.0.69):
- `get_historical_data_v2` before `generate_session` returns None: we authenticate first.
- it returns only the JSON body (`requests.get(...).json()`: `{"Success": [...], "Status": 200,
  "Error": None}`, or `Status` 401/429/500 with `Error` set), dropping the HTTP status and
  headers; a body that is not JSON (a gateway's HTML page) or a network failure is raised as a
  plain `Exception` chained to the original, which `classify_exception` unwraps. So
  `breeze_connect_factory` wraps the `requests` module it uses (`_RequestsWithTimeout`), which
  keeps the last response, and its client (`_StatusKeepingClient`) raises an HTTP error status
  as `requests.HTTPError` with that response: 429 is retried after its `Retry-After`, 401 is an
  authentication error and 5xx is retried, whatever the body says (or if it is HTML).
- its `requests` calls have no timeout: the same wrapper gives them one.
- importing it downloads Breeze's Security Master and creates `logs/apiLogs.log` and
  `logs/websocketLogs.log` in the working directory; each `generate_session` downloads the
  Security Master again. It is imported only when a fetch needs it.
"No data" (Status 200, `Success` empty) and "error" (`Error` set or Status not 200) are never
confused. Credentials are never logged, and every message raised here is scrubbed of them.
No Dagster here.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from sensequant_assets.settings import SettingsError

from .base import DataSourceError
from .breeze_state import CallBudget, Clock

__all__ = [
    "CREDENTIAL_VARS",
    "TOKEN_FILE_VAR",
    "BreezeApiError",
    "BreezeAuthError",
    "BreezeClient",
    "BreezeError",
    "BreezeSession",
    "Credentials",
    "MissingCredentialsError",
    "RetryPolicy",
    "breeze_connect_factory",
    "classify_answer",
    "classify_exception",
    "credentials_from_env",
    "missing_credentials",
]

CREDENTIAL_VARS = ("BREEZE_API_KEY", "BREEZE_API_SECRET", "BREEZE_SESSION_TOKEN")
TOKEN_FILE_VAR = "BREEZE_SESSION_TOKEN_FILE"
HTTP_TIMEOUT_SECONDS = 30.0
_log = logging.getLogger("sensequant_assets.sources.breeze")
_AUTH_TEXT = re.compile(
    r"authenticat|unauthori[sz]ed|session ?(key|token)?\s*(is\s*)?(invalid|expired|incorrect)|"
    r"invalid session|api ?key|app ?key|credential",
    re.IGNORECASE,
)
_TRANSIENT_TEXT = re.compile(
    r"timed? ?out|timeout|temporarily|connection (aborted|reset|refused)|max retries|"
    r"remote end closed|bad gateway|service unavailable",
    re.IGNORECASE,
)
LOGIN_HELP = (  # the README's step 2 and 3 say the same
    "Breeze session tokens expire daily: open https://api.icicidirect.com/apiuser/login?api_key=<your API "
    "key, URL-encoded>, log in, and copy the apisession value from the address you land on; write it to the "
    f"file {TOKEN_FILE_VAR} names (read at every run and after a rejection: no restart), or set "
    "BREEZE_SESSION_TOKEN and restart Dagster (make run) with it"
)


class BreezeError(DataSourceError):
    """A Breeze fetch that failed; the message names symbol, stock code, dates and the API's words."""


class BreezeAuthError(BreezeError):
    """Breeze rejected the credentials (401, an expired or wrong session token, a wrong key)."""


class BreezeApiError(BreezeError):
    """Any other error answer, or retries exhausted."""


class MissingCredentialsError(SettingsError):
    """Credentials not set; the message names the variables."""


class BreezeClient(Protocol):
    """The two breeze-connect methods we use (`BreezeConnect` has them; tests pass a fake)."""

    def generate_session(self, api_secret: str, session_token: str) -> Any: ...

    def get_historical_data_v2(
        self,
        interval: str,
        from_date: str,
        to_date: str,
        stock_code: str,
        exchange_code: str,
        product_type: str,
    ) -> Any: ...


ClientFactory = Callable[[str], BreezeClient]  # api key -> a client not yet authenticated


@dataclass(frozen=True)
class Credentials:
    """The three secrets; their repr shows none of them."""

    api_key: str = field(repr=False)
    api_secret: str = field(repr=False)
    session_token: str = field(repr=False)

    def values(self) -> tuple[str, ...]:
        return (self.api_key, self.api_secret, self.session_token)


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """`text` with every credential value replaced by `***`."""
    for secret in sorted((s for s in secrets if s and len(s) >= 3), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _token_from_file(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise MissingCredentialsError(
            f"{TOKEN_FILE_VAR}={path}: cannot read the session token file ({exc.strerror})"
        ) from None


def missing_credentials(environ: Mapping[str, str]) -> list[str]:
    """The credential variables not set (the token may come from BREEZE_SESSION_TOKEN_FILE)."""
    missing = [name for name in CREDENTIAL_VARS[:2] if not environ.get(name, "").strip()]
    if not environ.get("BREEZE_SESSION_TOKEN", "").strip() and not environ.get(TOKEN_FILE_VAR, "").strip():
        missing.append("BREEZE_SESSION_TOKEN")
    return missing


def require_credentials(environ: Mapping[str, str]) -> None:
    """Refuse at once, naming what is missing, before anything is fetched or written."""
    if missing := missing_credentials(environ):
        raise MissingCredentialsError(
            f"SENSEQUANT_DATA_SOURCE=breeze needs Breeze credentials: {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set (the session token may instead be in "
            f"the file {TOKEN_FILE_VAR} names). Nothing was fetched or written. To train on bars "
            "already cached, use SENSEQUANT_DATA_SOURCE=csv with the same SENSEQUANT_DATA_DIR"
        )


def credentials_from_env(
    api_key: str, api_secret: str, session_token: str = "", token_file: str = ""
) -> Credentials:
    """Credentials with the session token read now: from `token_file` when given (so a renewed
    token reaches a running Dagster), else `session_token`."""
    token = _token_from_file(token_file) if token_file else session_token.strip()
    environ = {
        "BREEZE_API_KEY": api_key,
        "BREEZE_API_SECRET": api_secret,
        "BREEZE_SESSION_TOKEN": token,
    }
    if missing := missing_credentials(environ):
        where = f" (the file {token_file} is empty)" if token_file and not token else ""
        raise MissingCredentialsError(
            f"Breeze credentials missing: {', '.join(missing)}{where}; nothing was fetched or written"
        )
    return Credentials(api_key.strip(), api_secret.strip(), token)


# -- answers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    kind: Literal["rows", "retry", "auth", "error"]
    rows: list[Any] = field(default_factory=list)  # [] is "no data", an answer, not an error
    message: str = ""
    retry_after: float | None = None


def _retry_after(value: Any) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if 0 <= seconds <= 3600 else None


def _header(headers: Any, name: str) -> Any:
    if not isinstance(headers, Mapping):
        return None
    for key, value in headers.items():
        if str(key).lower().replace("_", "-") == name:
            return value
    return None


def _status_outcome(status: int | None, text: str, retry_after: float | None) -> Outcome | None:
    """The outcome an HTTP-like status decides, or None when it is a success."""
    if status == 429:
        return Outcome("retry", message=f"429 too many requests: {text}", retry_after=retry_after)
    if status in (401, 403) or (status != 200 and _AUTH_TEXT.search(text)):
        return Outcome("auth", message=f"{status}: {text}")
    if status is not None and 500 <= status < 600:
        return Outcome("retry", message=f"server error {status}: {text}")
    return None


def classify_answer(answer: Any) -> Outcome:
    """What a `get_historical_data_v2` answer means: rows (maybe none), retry, auth or error."""
    if answer is None:
        return Outcome("error", message="no answer (breeze-connect returns None before generate_session)")
    if not isinstance(answer, Mapping):
        return Outcome("error", message=f"unexpected answer of type {type(answer).__name__}")
    raw_status, error, success = answer.get("Status"), answer.get("Error"), answer.get("Success")
    try:
        status = int(raw_status)
    except (TypeError, ValueError):
        return Outcome("error", message=f"answer without a valid Status ({raw_status!r}): Error={error!r}")
    text = str(error) if error not in (None, "") else "(no Error text)"
    decided = _status_outcome(status, text, _retry_after(_header(answer, "retry-after")))
    if decided is not None:
        return decided
    if status != 200 or error not in (None, ""):
        return Outcome("error", message=f"Status {status}: {text}")
    if success is None or success == [] or success == "":
        return Outcome("rows", rows=[])
    if not isinstance(success, list):
        return Outcome("error", message=f"Success is a {type(success).__name__}, not a list of rows")
    return Outcome("rows", rows=list(success))


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 8:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def classify_exception(exc: BaseException) -> Outcome:
    """What an exception from breeze-connect means; it wraps `requests` errors in a plain Exception."""
    import requests  # a Dagster dependency; breeze-connect raises its errors

    text = str(exc) or type(exc).__name__
    for error in _chain(exc):
        response = getattr(error, "response", None)
        if isinstance(error, requests.HTTPError) and response is not None:
            status = getattr(response, "status_code", None)
            after = _retry_after(_header(getattr(response, "headers", None), "retry-after"))
            decided = _status_outcome(status, text, after)
            shown = text if text.startswith(f"HTTP {status}") else f"HTTP {status}: {text}"
            return decided or Outcome("error", message=shown)
        if isinstance(error, requests.Timeout | TimeoutError):
            return Outcome("retry", message=f"timeout: {text}")
        if isinstance(error, requests.ConnectionError | ConnectionError):
            return Outcome("retry", message=f"connection failed: {text}")
        if isinstance(error, json.JSONDecodeError):
            return Outcome("retry", message=f"the answer was not JSON (a gateway error page?): {text}")
    if _AUTH_TEXT.search(text):
        return Outcome("auth", message=text)
    if _TRANSIENT_TEXT.search(text):
        return Outcome("retry", message=text)
    return Outcome("error", message=f"{type(exc).__name__}: {text}")


# -- the session -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: attempt n waits base * 2**n (at most `cap`) times a
    random factor in [0.5, 1), so clients that failed together do not retry together."""

    attempts: int = 5
    base_seconds: float = 1.0
    cap_seconds: float = 60.0

    def delay(self, retry: int, rng: random.Random) -> float:
        return min(self.cap_seconds, self.base_seconds * 2**retry) * (0.5 + rng.random() / 2)


class BreezeSession:
    """One authenticated client; every call goes through the rate/quota budget and the retries.

    `credentials` is called when a session starts and after a rejection, so a token renewed in
    the meantime (in the token file) is used without restarting anything.
    """

    def __init__(
        self,
        credentials: Callable[[], Credentials],
        client_factory: ClientFactory,
        budget: CallBudget,
        clock: Clock,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._credentials = credentials
        self._factory = client_factory
        self.budget, self.clock = budget, clock
        self.retry = retry or RetryPolicy()
        self.rng = rng or random.Random()
        self._client: BreezeClient | None = None
        self._used: Credentials | None = None
        self.retries = 0

    def _secrets(self) -> tuple[str, ...]:
        return self._used.values() if self._used else ()

    def _attempts(self, call: Callable[[], Any], what: str, answer_is_data: bool) -> Outcome:
        """`call` until it is not a transient failure, within the retry policy and the budget."""
        outcome = Outcome("error", message="not attempted")
        for attempt in range(self.retry.attempts):
            self.budget.acquire()
            try:
                answer = call()
                outcome = classify_answer(answer) if answer_is_data else Outcome("rows")
            except BreezeError:
                raise
            except Exception as exc:  # breeze-connect raises plain Exceptions
                outcome = classify_exception(exc)
            if outcome.kind != "retry":
                return outcome
            if attempt + 1 < self.retry.attempts:
                wait = outcome.retry_after
                wait = self.retry.delay(attempt, self.rng) if wait is None else wait
                _log.warning(
                    "%s: %s; retry %d of %d in %.1f s",
                    what,
                    redact(outcome.message, self._secrets()),
                    attempt + 1,
                    self.retry.attempts - 1,
                    wait,
                )
                self.retries += 1
                self.clock.sleep(wait)
        raise BreezeApiError(
            redact(
                f"{what}: gave up after {self.retry.attempts} attempts: {outcome.message}", self._secrets()
            )
        )

    def _connect(self) -> None:
        creds = self._credentials()
        self._used = creds
        client = self._factory(creds.api_key)
        outcome = self._attempts(
            lambda: client.generate_session(api_secret=creds.api_secret, session_token=creds.session_token),
            "Breeze generate_session",
            answer_is_data=False,
        )
        if outcome.kind == "auth":
            raise BreezeAuthError(
                redact(f"Breeze rejected the credentials ({outcome.message}). {LOGIN_HELP}", creds.values()),
                rule="authenticated",
            )
        if outcome.kind == "error":
            raise BreezeApiError(
                redact(f"Breeze generate_session failed: {outcome.message}", creds.values()),
                rule="authenticated",
            )
        self._client = client

    def _token_renewed(self) -> bool:
        """Whether the session token changed since the session started (read again now)."""
        try:
            fresh = self._credentials()
        except MissingCredentialsError:
            return False
        return self._used is None or fresh.session_token != self._used.session_token

    def daily_rows(self, symbol: str, stock_code: str, first: str, last: str) -> list[Any]:
        """The rows Breeze answers for daily bars of `stock_code` on NSE cash from `first` to
        `last` (YYYY-MM-DD, both inclusive); [] when it has none. Raises BreezeAuthError or
        BreezeApiError (naming symbol, code, dates and the API's message) otherwise."""
        what = f"{symbol} ({stock_code}) {first}..{last}"
        renewed = False
        while True:
            if self._client is None:
                self._connect()
            client = self._client
            outcome = self._attempts(
                lambda client=client: client.get_historical_data_v2(
                    interval="1day",
                    from_date=f"{first}T00:00:00.000Z",
                    to_date=f"{last}T23:59:59.000Z",
                    stock_code=stock_code,
                    exchange_code="NSE",
                    product_type="cash",
                ),
                f"Breeze get_historical_data_v2 {what}",
                answer_is_data=True,
            )
            if outcome.kind == "auth" and not renewed and self._token_renewed():
                self._client, renewed = None, True  # a new token was written: one new session
                continue
            if outcome.kind == "auth":
                raise BreezeAuthError(
                    redact(
                        f"{what}: Breeze rejected the session ({outcome.message}). {LOGIN_HELP}",
                        self._secrets(),
                    ),
                    symbol=symbol,
                    rule="authenticated",
                )
            if outcome.kind == "error":
                raise BreezeApiError(
                    redact(f"{what}: Breeze answered an error: {outcome.message}", self._secrets()),
                    symbol=symbol,
                    rule="Breeze answer",
                )
            return outcome.rows


# -- the real client -------------------------------------------------------------------------


class _RequestsWithTimeout:
    """Stands in for the `requests` module inside breeze_connect, whose calls pass no timeout
    (a stalled connection would hang the run for ever): the same functions, with one. It keeps
    the last response of this thread (`last_response`), whose HTTP status and headers
    breeze-connect drops."""

    def __init__(self, module: Any, timeout: float) -> None:
        self._module, self._timeout = module, timeout
        self._last = threading.local()

    def forget(self) -> None:
        self._last.response = None

    def last_response(self) -> Any:
        return getattr(self._last, "response", None)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._module, name)
        if name in ("get", "post", "put", "delete", "request"):

            def with_timeout(*args: Any, **kwargs: Any) -> Any:
                kwargs.setdefault("timeout", self._timeout)
                response = attr(*args, **kwargs)
                self._last.response = response
                return response

            return with_timeout
        return attr


def _raise_http_error(response: Any) -> None:
    """`requests.HTTPError` carrying `response` when its status is an error (>= 400)."""
    import requests

    status = getattr(response, "status_code", None)
    if not isinstance(status, int) or status < 400:
        return
    body = " ".join(str(getattr(response, "text", "") or "").split())[:200] or "(empty body)"
    reason = getattr(response, "reason", None)
    raise requests.HTTPError(f"HTTP {status}{f' {reason}' if reason else ''}: {body}", response=response)


class _StatusKeepingClient:
    """breeze-connect's client with the HTTP status it drops put back: an answer (or a failure)
    whose HTTP status is an error raises `requests.HTTPError` with the response, so
    `classify_exception` sees the real status and the `Retry-After` header."""

    def __init__(self, client: Any, http: _RequestsWithTimeout) -> None:
        self._client, self._http = client, http

    def _call(self, method: Any, *, every_response: bool, **kwargs: Any) -> Any:
        self._http.forget()
        try:
            answer = method(**kwargs)
        except Exception as exc:
            try:
                _raise_http_error(self._http.last_response())
            except Exception as http_error:
                raise http_error from exc
            raise
        if every_response:  # one request per call: its status decides, whatever the body says
            _raise_http_error(self._http.last_response())
        return answer

    def generate_session(self, api_secret: str, session_token: str) -> Any:
        # several requests (the Security Master's download after the session's): only a failure
        # is looked into, so a later download's status never fails a session that was granted
        return self._call(
            self._client.generate_session,
            every_response=False,
            api_secret=api_secret,
            session_token=session_token,
        )

    def get_historical_data_v2(self, **kwargs: Any) -> Any:
        return self._call(self._client.get_historical_data_v2, every_response=True, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def breeze_connect_factory(api_key: str) -> BreezeClient:
    """A `breeze_connect.BreezeConnect`; the package is an optional extra, imported only here."""
    try:
        import breeze_connect.breeze_connect as sdk
    except ImportError as exc:
        raise BreezeError(
            f"SENSEQUANT_DATA_SOURCE=breeze needs the breeze-connect package ({exc}): install the extra "
            "with `.venv/bin/pip install -e '.[breeze]'`",
            rule="breeze-connect installed",
        ) from None
    except Exception as exc:  # its import downloads the Security Master: a network failure lands here
        raise BreezeApiError(
            f"importing breeze-connect failed (it downloads Breeze's Security Master on import): {exc}",
            rule="breeze-connect importable",
        ) from None
    # It logs every answer at DEBUG to logs/apiLogs.log (the historical data's with a malformed
    # logging call, which prints "--- Logging error ---" on stderr each time): errors only.
    api_logger = logging.getLogger("APILogger")
    api_logger.propagate = False
    api_logger.setLevel(logging.ERROR)
    if not isinstance(sdk.requests, _RequestsWithTimeout):
        sdk.requests = _RequestsWithTimeout(sdk.requests, HTTP_TIMEOUT_SECONDS)
    return _StatusKeepingClient(sdk.BreezeConnect(api_key=api_key), sdk.requests)
