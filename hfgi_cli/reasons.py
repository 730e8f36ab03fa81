"""Other code's error messages, made short enough for one line of ours without cutting a word.

Library messages (torch, PIL, ffmpeg) run to several lines and hundreds of characters; a one-line
error quotes the first line, ended at a sentence or a word, never mid-word.
"""

from __future__ import annotations


def short_reason(text: object, limit: int = 120) -> str:
    """The first line of ``text`` (an exception or a string) in at most ``limit`` characters: whole
    when it fits, else up to its last full sentence that does, else up to a word and "…". An
    exception without a message gives its class's name."""
    first = next((line.strip() for line in str(text).splitlines() if line.strip()), "")
    if not first and isinstance(text, BaseException):
        first = type(text).__name__
    if len(first) <= limit:
        return first
    cut = first[:limit + 1]
    sentence = cut.rfind(". ")
    if sentence >= limit // 2:
        return cut[: sentence + 1]
    space = cut.rfind(" ", 0, limit)
    return (cut[:space] if space > 0 else first[: limit - 1]).rstrip(" ,;:") + "…"
