"""Symbol validation: symbols end up in partition keys and directory names."""

from __future__ import annotations

import pytest

from sensequant_assets.sources.symbols import (
    MAX_SYMBOL_LENGTH,
    InvalidSymbolError,
    parse_symbols,
    validate_symbol,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("RELIANCE", "RELIANCE"),
        ("  reliance \n", "RELIANCE"),
        ("M&M", "M&M"),
        ("BAJAJ-AUTO", "BAJAJ-AUTO"),
        ("NAM-INDIA", "NAM-INDIA"),
        ("J&KBANK", "J&KBANK"),
        ("NIFTY_50", "NIFTY_50"),
        ("BRK.B", "BRK.B"),
        ("3MINDIA", "3MINDIA"),
        ("A" * MAX_SYMBOL_LENGTH, "A" * MAX_SYMBOL_LENGTH),
    ],
)
def test_valid_symbols_are_canonicalised(raw: str, expected: str) -> None:
    assert validate_symbol(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("A|B", "'|'"),
        ("A,B", "','"),
        ("A[B", "'['"),
        ("A]B", "']'"),
        ("A/B", "path separator"),
        ("A\\B", "path separator"),
        ("..", ".."),
        ("A..B", ".."),
        ("A B", "whitespace"),
        ("A\x00B", "control character"),
        ("A\x1bB", "control character"),
        ("A\tB", "control character"),
        ("A" * (MAX_SYMBOL_LENGTH + 1), "longer than"),
        ("A$B", "'$'"),
        ("RÉLIANCE", "'É'"),
        ("straße", "non-ASCII"),
        ("-X", "start with a letter or digit"),
        (".", "start with a letter or digit"),
    ],
)
def test_invalid_symbols_are_refused_with_symbol_and_reason(raw: str, reason: str) -> None:
    with pytest.raises(InvalidSymbolError) as info:
        validate_symbol(raw)
    message = str(info.value)
    assert repr(raw) in message
    assert reason in message


def test_invalid_symbol_error_is_a_value_error() -> None:
    assert issubclass(InvalidSymbolError, ValueError)
    with pytest.raises(ValueError):
        validate_symbol("A|B")


def test_non_string_is_refused() -> None:
    with pytest.raises(InvalidSymbolError, match="expected a string"):
        validate_symbol(123)  # type: ignore[arg-type]


def test_parse_symbols_keeps_order_and_drops_duplicates() -> None:
    assert parse_symbols("tcs, RELIANCE,M&M,TCS , reliance,") == ["TCS", "RELIANCE", "M&M"]


def test_parse_symbols_empty_text_gives_empty_list() -> None:
    assert parse_symbols("") == []
    assert parse_symbols(" , ,") == []


def test_parse_symbols_reports_all_invalid_entries_at_once() -> None:
    with pytest.raises(InvalidSymbolError) as info:
        parse_symbols("RELIANCE,A/B,TCS,x y,..")
    message = str(info.value)
    assert "3 invalid symbol(s)" in message
    for bad in ("'A/B'", "'x y'", "'..'"):
        assert bad in message
    assert "invalid symbol 'RELIANCE'" not in message
    assert "invalid symbol 'TCS'" not in message
