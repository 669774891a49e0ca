"""NSE symbol -> ISEC stock code, the name Breeze knows a share by (RELIANCE is RELIND).

Breeze answers a code it does not know with no rows, which the predecessor took for "no data":
so a symbol without a code is an error naming the file to edit, never a guess. The known codes
ship in `isec_codes.json`; a user file (`SENSEQUANT_BREEZE_CODES_FILE`, same format) adds codes
or overrides shipped ones. Keys starting with `_` are comments. No Dagster here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .base import DataSourceError

__all__ = ["CODES_FILE_VAR", "SHIPPED_CODES", "StockCodeError", "code_origin", "isec_code", "load_codes"]

SHIPPED_CODES = Path(__file__).with_name("isec_codes.json")
CODES_FILE_VAR = "SENSEQUANT_BREEZE_CODES_FILE"
_CODE = re.compile(r"[A-Z0-9&\-_.]{1,20}")


class StockCodeError(DataSourceError):
    """A symbol without an ISEC stock code, or a codes file that cannot be used (names the file)."""


def _read(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StockCodeError(
            f"{path}: cannot read the NSE -> ISEC stock code file ({exc}); it must be a JSON object "
            '{"SYMBOL": "ISECCODE", ...}',
            origin=str(path),
            rule="stock code file",
        ) from None
    if not isinstance(data, dict):
        raise StockCodeError(
            f'{path}: must hold a JSON object {{"SYMBOL": "ISECCODE", ...}}, not {type(data).__name__}',
            origin=str(path),
            rule="stock code file",
        )
    codes: dict[str, str] = {}
    for symbol, code in data.items():
        if str(symbol).startswith("_"):
            continue
        if not isinstance(code, str) or not _CODE.fullmatch(code.strip().upper()):
            raise StockCodeError(
                f"{path}: {symbol!r}: {code!r} is not an ISEC stock code (letters and digits, e.g. RELIND)",
                symbol=str(symbol),
                origin=str(path),
                rule="stock code file",
            )
        codes[str(symbol).strip().upper()] = code.strip().upper()
    return codes


def load_codes(user_file: str | Path | None = None) -> dict[str, str]:
    """The shipped codes, overridden and extended by `user_file` when given."""
    codes = _read(SHIPPED_CODES)
    if user_file:
        codes.update(_read(Path(user_file)))
    return codes


def isec_code(symbol: str, user_file: str | Path | None = None) -> str:
    """The ISEC stock code of `symbol`; StockCodeError naming the file to edit when there is none."""
    code = load_codes(user_file).get(symbol.strip().upper())
    if code is None:
        where = (
            f"add it to {user_file}"
            if user_file
            else f"set {CODES_FILE_VAR} to a JSON file such as "
            f'{{"{symbol}": "<ISEC code>"}} (it extends {SHIPPED_CODES})'
        )
        raise StockCodeError(
            f"{symbol}: no ISEC stock code for this NSE symbol, so Breeze cannot be asked for it: {where}. "
            "Find the code in Breeze's Security Master (NSEScripMaster.txt, column ShortName)",
            symbol=symbol,
            origin=str(user_file or SHIPPED_CODES),
            rule="stock code known",
        )
    return code


def code_origin(symbol: str, user_file: str | Path | None = None) -> str:
    """The file `symbol`'s code comes from: the user's file when it names the symbol, else the
    shipped one (with the variable that would override it)."""
    if user_file and symbol.strip().upper() in _read(Path(user_file)):
        return str(user_file)
    return f"{SHIPPED_CODES} (override it in the file {CODES_FILE_VAR} names)"
