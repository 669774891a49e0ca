"""NSE symbol validation.

Symbols become Dagster partition keys (`SYMBOL|WINDOW`) and directory names
(`<SYMBOL>_<start>_to_<end>/`), so characters that break either are refused up front with a
message that names the symbol and the reason, instead of failing later deep inside Dagster or
the filesystem.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "MAX_SYMBOL_LENGTH",
    "InvalidSymbolError",
    "key_symbol_problem",
    "parse_symbols",
    "validate_symbol",
]

MAX_SYMBOL_LENGTH = 32

# Characters with a specific meaning somewhere downstream; named explicitly in the message.
_FORBIDDEN: dict[str, str] = {
    "|": "separates the dimensions of a multi-partition key",
    ",": "separates symbols in lists and partition key ranges",
    "[": "is reserved in partition key selections",
    "]": "is reserved in partition key selections",
    "/": "is a path separator",
    "\\": "is a path separator",
}
_ALLOWED = re.compile(r"[A-Z0-9&\-_.]+")


class InvalidSymbolError(ValueError):
    """A symbol that cannot be used as a partition key or directory name."""


def _problem(symbol: str) -> str | None:
    """Return why an already stripped and uppercased symbol is invalid, or None if it is fine."""
    if not symbol:
        return "it is empty"
    if len(symbol) > MAX_SYMBOL_LENGTH:
        return f"it is longer than {MAX_SYMBOL_LENGTH} characters ({len(symbol)})"
    for char, reason in _FORBIDDEN.items():
        if char in symbol:
            return f"it contains {char!r}, which {reason}"
    if ".." in symbol:
        return "it contains '..' (parent-directory path component)"
    for char in symbol:
        if unicodedata.category(char).startswith("C"):
            return f"it contains a control character ({char!r})"
    if any(char.isspace() for char in symbol):
        return "it contains whitespace"
    if not _ALLOWED.fullmatch(symbol):
        bad = sorted({c for c in symbol if not _ALLOWED.fullmatch(c)})
        return (
            f"it contains {', '.join(repr(c) for c in bad)}; only A-Z, 0-9, '&', '-', '_' and '.' are allowed"
        )
    if not symbol[0].isalnum():
        # '.', '-X' or '_' would be a hidden file, a CLI option or an odd directory name.
        return "it must start with a letter or digit"
    return None


def validate_symbol(symbol: str) -> str:
    """Return the canonical (stripped, uppercased) symbol or raise InvalidSymbolError.

    NSE symbols such as `M&M`, `BAJAJ-AUTO` and `J&KBANK` are valid.
    """
    if not isinstance(symbol, str):
        raise InvalidSymbolError(f"invalid symbol {symbol!r}: expected a string, got {type(symbol).__name__}")
    stripped = symbol.strip()
    canonical = stripped.upper()
    problem = _problem(canonical)
    if problem is None and not stripped.isascii():
        # e.g. 'ß'.upper() == 'SS': never let case mapping invent a different valid symbol.
        problem = "it contains non-ASCII characters"
    if problem is not None:
        raise InvalidSymbolError(f"invalid symbol {symbol!r}: {problem}")
    return canonical


def key_symbol_problem(symbol: str) -> str | None:
    """Why a symbol taken from a partition key cannot name a partition directory, or None.

    Keys added outside the CLI (the UI's "Add partition", the API) are not validated by Dagster:
    such a symbol must become neither a path outside the artifact store nor a second directory
    for another spelling of the same symbol.
    """
    try:
        canonical = validate_symbol(symbol)
    except InvalidSymbolError as exc:
        return f"{exc}; remove it from the symbols"
    if canonical != symbol:
        return (
            f"symbol {symbol!r} is not written as {canonical!r}; the artifact store keeps one "
            f"directory per symbol, so register {canonical!r} instead (`sensequant symbols add` "
            "does) and remove this one"
        )
    return None


def parse_symbols(text: str) -> list[str]:
    """Parse a comma-separated symbol list (e.g. `SENSEQUANT_SYMBOLS`).

    Returns canonical symbols, de-duplicated, in first-seen order. Blank entries (a trailing comma,
    `A,,B`) are skipped. All invalid entries are reported together in one InvalidSymbolError so a
    user fixes the list in one go.
    """
    result: list[str] = []
    seen: set[str] = set()
    problems: list[str] = []
    for raw in text.split(","):
        if not raw.strip():
            continue
        try:
            symbol = validate_symbol(raw)
        except InvalidSymbolError as exc:
            problems.append(str(exc))
            continue
        if symbol not in seen:
            seen.add(symbol)
            result.append(symbol)
    if problems:
        raise InvalidSymbolError(f"{len(problems)} invalid symbol(s) in {text!r}: " + "; ".join(problems))
    return result
