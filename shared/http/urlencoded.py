"""``application/x-www-form-urlencoded``, as both services read it (a token request's body, the
server API's query string): UTF-8 after percent-decoding, never U+FFFD in place of a bad byte
(aiohttp's ``request.query`` and ``parse_qsl``'s default both replace), and a bounded number of
fields, refused before any is read."""

from __future__ import annotations

from urllib.parse import parse_qsl

__all__ = ["UrlencodedError", "strict_pairs"]


class UrlencodedError(ValueError):
    """``str(error)`` says why, for the client."""


def strict_pairs(text: str, *, max_fields: int, what: str) -> list[tuple[str, str]]:
    """The name-value pairs of ``text`` in order, blank values kept; ``what`` names it in the
    error (``"query"``, ``"form body"``)."""
    try:
        return parse_qsl(
            text,
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=max_fields,
        )
    except UnicodeDecodeError:
        raise UrlencodedError(f"the {what} is not valid UTF-8") from None
    except ValueError:
        raise UrlencodedError(f"the {what} has more than {max_fields} fields") from None
