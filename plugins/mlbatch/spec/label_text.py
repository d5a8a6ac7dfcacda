"""How sheet text is normalised and compared: one rule for the spec's classes and the sheet's cells.

The spec validates its ``labels.classes`` with :func:`class_index`, and the label checker maps
each sheet label through the same index, so a class the spec accepts is exactly a label the
checker accepts (NFKC, invisible characters dropped, trimmed, compared case-insensitively).
Standard library only: the spec imports this on every DAG parse.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

MAX_SHOWN = 80  # longest cell text quoted back in a verdict


def normalize(text: str) -> str:
    """NFKC, drop format characters (zero-width spaces, BOM, ...) anywhere, trim whitespace.

    Format characters are invisible in the sheet, so an analyst cannot see or fix them; they are
    removed inside the value too. ``str.strip()`` trims every ``str.isspace`` character (NBSP and
    U+3000 included, though NFKC has already made those plain spaces).
    """
    if text.isascii():  # fast path: NFKC is the identity and there are no format characters
        return text.strip()
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return text.strip()


def fold(text: str) -> str:
    """The form two labels (or two column titles) are compared in: normalised, case-folded."""
    return normalize(text).casefold()


def class_index(classes: Iterable[str]) -> dict[str, str]:
    """Folded label -> the class as the spec spells it (normalised); ``ValueError`` names the problem."""
    names = list(classes)
    index: dict[str, str] = {}
    for cls in names:
        key = fold(cls)
        if not key:
            raise ValueError(f"class names must not be blank, got {names!r}")
        if key in index:
            raise ValueError(
                f"class names must be distinct ignoring case: {index[key]!r} and {cls!r} are the same label "
                "(sheet labels are matched case-insensitively, so the two could not be told apart)"
            )
        index[key] = normalize(cls)
    if not index:
        raise ValueError("classes is empty: at least one allowed label is needed")
    return index


def quote(text: str) -> str:
    """Double-quoted, with invisible characters spelled out so the analyst can see them."""
    if len(text) > MAX_SHOWN:
        text = text[: MAX_SHOWN - 1] + "…"
    out = []
    for ch in text:
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif ch != " " and (ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf")):
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'
