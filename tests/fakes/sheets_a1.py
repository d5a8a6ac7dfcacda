"""A1 notation for the Sheets API double: ranges, column letters, quoted titles, and the API's error."""

from __future__ import annotations

import re


class ApiError(Exception):
    def __init__(self, code: int, status: str, message: str):
        super().__init__(message)
        self.code, self.status, self.message = code, status, message


_CELL = re.compile(r"^([A-Z]*)([0-9]*)$")


def _col_index(letters: str) -> int:
    n = 0
    for ch in letters:
        n = n * 26 + ord(ch) - 64
    return n - 1


def _col_letters(idx: int) -> str:
    name, idx = "", idx + 1
    while idx:
        idx, rem = divmod(idx - 1, 26)
        name = chr(65 + rem) + name
    return name


def split_range(a1: str) -> tuple[str, str]:
    """ "'my sheet'!B2:C" -> ("my sheet", "B2:C"); "labels" -> ("labels", "")."""
    if a1.startswith("'"):
        end, i = None, 1
        while i < len(a1):
            if a1[i] == "'":
                if i + 1 < len(a1) and a1[i + 1] == "'":
                    i += 2
                    continue
                end = i
                break
            i += 1
        if end is None:
            raise ApiError(400, "INVALID_ARGUMENT", f"Unable to parse range: {a1}")
        title, rest = a1[1:end].replace("''", "'"), a1[end + 1 :]
    else:
        title, _, rest = a1.partition("!")
        rest = "!" + rest if rest else ""
    if rest and not rest.startswith("!"):
        raise ApiError(400, "INVALID_ARGUMENT", f"Unable to parse range: {a1}")
    return title, rest[1:]


def _quoted(title: str) -> str:
    return title if re.fullmatch(r"[A-Za-z0-9_]+", title) else "'" + title.replace("'", "''") + "'"
