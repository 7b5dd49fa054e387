"""Request bodies are taken as sent. aiohttp inflates a gzip, deflate or br body by default: a
decompression bomb's surface, and a corrupt one failed the body's read, and aiohttp's own read of
an unread body, with a traceback each. No client of either service compresses what it sends, so
the servers run with ``auto_decompress`` off and refuse a content coding (RFC 9110 section
15.5.16: 415)."""

from __future__ import annotations

from aiohttp import hdrs, web

__all__ = ["content_coding_refusal", "media_type_refusal"]


def content_coding_refusal(request: web.Request) -> str | None:
    """Why the body cannot be read (its content coding), or None for a body as sent. Every
    ``Content-Encoding`` line counts: repeated lines are one comma list (RFC 9110 section 5.3)."""
    codings = [
        coding.strip().lower()
        for line in request.headers.getall(hdrs.CONTENT_ENCODING, ())
        for coding in line.split(",")
    ]
    applied = [coding for coding in codings if coding not in ("", "identity")]
    if not applied:
        return None
    shown = ", ".join(applied)[:40]
    return f"the request body must not be compressed (Content-Encoding: {shown!r})"


def media_type_refusal(request: web.Request, media_types: tuple[str, ...]) -> str | None:
    """Why the body is not one of ``media_types`` in UTF-8, the only charset JSON (RFC 8259
    section 8.1) and forms take here, or None. Both services ask it: the server API read any
    ``Content-Type`` (``text/plain``, JSON labelled Latin-1) as UTF-8 JSON, where auth_service
    answered 415 (an outside probe)."""
    if request.content_type not in media_types:
        return f"the request body must be {' or '.join(media_types)}"
    if (request.charset or "utf-8").lower() not in ("utf-8", "utf8"):
        return "the request body must be UTF-8"
    return None
