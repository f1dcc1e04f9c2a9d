"""Is a text exactly one emoji? The rule a reaction's body follows.

The standard library has no grapheme segmentation (``unicodedata`` knows categories, not cluster
boundaries), so this is a small grammar after Unicode TS #51's emoji sequences, enough for the emoji
people pick from a keyboard:

- ``element`` is one of: a pair of regional indicators (a flag, 🇫🇷); a keycap (``0``-``9``, ``#``,
  ``*``, an optional U+FE0F, then U+20E3: 1️⃣); or a symbol (Unicode category ``So``, 👍 ❤ ©) followed
  by an optional variation selector (U+FE0E/U+FE0F), an optional skin-tone modifier (U+1F3FB-U+1F3FF)
  and an optional tag sequence (U+E0020-U+E007E ending with U+E007F: 🏴󠁧󠁢󠁳󠁣󠁴󠁿);
- an emoji is ``element (U+200D element)*`` (zero-width-joiner sequences: 👩‍💻, 👨‍👩‍👧‍👦),
  at most :data:`MAX_EMOJI_CODE_POINTS` code points.

A code point not yet assigned in this Python's Unicode database but inside the emoji planes
(U+1F000-U+1FAFF) counts as a symbol, so emoji newer than the runtime still pass. Text, spaces, two
emoji side by side and lone modifiers are not one emoji. Symbols that are not emoji (♔) pass too: the
rule bounds what a reaction may be; it is not an emoji catalogue.
"""

from __future__ import annotations

import unicodedata

MAX_EMOJI_CODE_POINTS = 32
_ZWJ = "\u200d"
_VARIATION = frozenset("\ufe0e\ufe0f")
_KEYCAP = "\u20e3"
_KEYCAP_BASES = frozenset("0123456789#*")
_TAG_END = "\U000e007f"


def _regional(char: str) -> bool:
    return "\U0001f1e6" <= char <= "\U0001f1ff"


def _modifier(char: str) -> bool:
    return "\U0001f3fb" <= char <= "\U0001f3ff"


def _tag(char: str) -> bool:
    return "\U000e0020" <= char <= "\U000e007e"


def _symbol(char: str) -> bool:
    category = unicodedata.category(char)
    return category == "So" or (category == "Cn" and "\U0001f000" <= char <= "\U0001faff")


def _element(text: str, at: int) -> int | None:
    """The index just after the element starting at ``at``, or None when none starts there."""
    char = text[at]
    if _regional(char):
        return at + 2 if at + 1 < len(text) and _regional(text[at + 1]) else None
    if char in _KEYCAP_BASES:
        at += 1
        if at < len(text) and text[at] == "\ufe0f":
            at += 1
        return at + 1 if at < len(text) and text[at] == _KEYCAP else None
    if not _symbol(char) or _modifier(char):
        return None
    at += 1
    if at < len(text) and text[at] in _VARIATION:
        at += 1
    if at < len(text) and _modifier(text[at]):
        at += 1
    if at < len(text) and _tag(text[at]):
        while at < len(text) and _tag(text[at]):
            at += 1
        if at >= len(text) or text[at] != _TAG_END:
            return None
        at += 1
    return at


def is_one_emoji(text: str) -> bool:
    """True when ``text`` is exactly one emoji by the module's rule."""
    if not text or len(text) > MAX_EMOJI_CODE_POINTS:
        return False
    at = _element(text, 0)
    while at is not None and at < len(text):
        if text[at] != _ZWJ or at + 1 >= len(text):
            return False
        at = _element(text, at + 1)
    return at == len(text)
