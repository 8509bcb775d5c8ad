"""Tokenizer and identifier reader shared by the filter and ``order_by`` parsers.

MLflow parses search strings with ``sqlparse``, so what counts as a number, a quoted string or an
identifier is whatever sqlparse's lexer says. We do not depend on sqlparse (it is a general SQL
lexer with many keyword quirks, and it is not a runtime dependency of evtrack); instead this lexer
reproduces the handful of token rules MLflow filters actually rely on, so the same strings are
accepted and rejected:

* numbers: ``1``, ``-1``, ``1.5``, ``.5``, ``5.``, ``1e5``, ``1E-5`` (hex is not a number);
* ``'single'`` and ``"double"`` quoted strings, where a doubled or backslash-escaped quote stays
  inside the token (MLflow keeps the escape characters verbatim in scalar values);
* ```backtick``` quoted names;
* words ``\\w[$#\\w]*`` (keywords such as ``AND`` are words; the parsers decide);
* comparison operators as maximal runs of ``<>=~!`` (so ``==`` is one, invalid, operator).

Anything else becomes a one-character ``OTHER`` token so that the parser can report it as an
invalid clause instead of failing on an exception.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Final


class Kind(Enum):
    BACKTICK = "backtick"
    NUMBER = "number"
    SQUOTE = "squote"
    DQUOTE = "dquote"
    WORD = "word"
    PUNCT = "punct"
    OP = "op"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Token:
    """One lexeme with its source span; spans let callers quote the user's own text in errors."""

    kind: Kind
    text: str
    start: int
    end: int

    def is_word(self, *words: str) -> bool:
        """Case-insensitive keyword test (MLflow accepts ``and``, ``In``, ``is not null`` ...)."""
        return self.kind is Kind.WORD and self.text.upper() in words


# Order matters and follows sqlparse: backticks, hex (rejected as OTHER), E-floats, floats,
# integers, strings, words, punctuation, operators.
_TOKEN_RE: Final = re.compile(
    r"""
    (?P<ws>\s+)
    |(?P<backtick>`(?:``|[^`])*`)
    |(?P<hex>-?0x[0-9a-f]+)
    |(?P<number>
        -?\d+(?:\.\d+)?e-?\d+
        |-?(?:\d+\.\d*|\.\d+)(?![_a-z])
        |-?\d+(?![_a-z])
    )
    |(?P<squote>'(?:''|\\'|[^'])*')
    |(?P<dquote>"(?:""|\\"|[^"])*")
    |(?P<word>\w[$\#\w]*)
    |(?P<punct>[;:()\[\],.])
    |(?P<op>[<>=~!]+)
    |(?P<other>.)
    """,
    re.IGNORECASE | re.VERBOSE | re.DOTALL,
)

_KINDS: Final = {
    "backtick": Kind.BACKTICK,
    "hex": Kind.OTHER,
    "number": Kind.NUMBER,
    "squote": Kind.SQUOTE,
    "dquote": Kind.DQUOTE,
    "word": Kind.WORD,
    "punct": Kind.PUNCT,
    "op": Kind.OP,
    "other": Kind.OTHER,
}

INTEGER_RE: Final = re.compile(r"-?\d+")

# Words that end an identifier or start an operator; they cannot name an attribute on their own
# (after a dot they can: ``params.in`` is the param called "in").
RESERVED: Final = frozenset({"AND", "OR", "NOT", "IN", "IS", "NULL", "LIKE", "ILIKE", "RLIKE"})


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens, dropping whitespace (spans keep the layout information)."""
    tokens: list[Token] = []
    for match in _TOKEN_RE.finditer(text):
        group = match.lastgroup
        if group is None or group == "ws":
            continue
        tokens.append(Token(_KINDS[group], match.group(), match.start(), match.end()))
    return tokens


@dataclass(frozen=True, slots=True)
class RawIdentifier:
    """``<entity>.<key>`` as written: entity is None for a bare key; both still carry quotes."""

    entity: str | None
    key: str
    start: int
    end: int


def _adjacent(tokens: list[Token], i: int) -> bool:
    """True if token ``i`` touches token ``i - 1``: identifiers may not contain spaces."""
    return 0 < i < len(tokens) and tokens[i].start == tokens[i - 1].end


def _is_dot(tokens: list[Token], i: int) -> bool:
    return i < len(tokens) and tokens[i].kind is Kind.PUNCT and tokens[i].text == "."


def read_identifier(tokens: list[Token], i: int) -> tuple[RawIdentifier, int] | None:
    """Read an identifier starting at ``tokens[i]``; return it and the index after it.

    Accepted shapes (no whitespace inside):

    * ``key`` / ```key``` / ``"key"``: a bare key, which MLflow treats as an attribute;
    * ``entity.key`` where key is a single quoted token (backtick, double or single quotes) or
      a dotted chain of words. Only the first dot separates entity and key, so
      ``tags.mlflow.runName`` is the tag ``mlflow.runName``.
    """
    if i >= len(tokens):
        return None
    head = tokens[i]
    if head.kind is Kind.WORD:
        if head.text.upper() in RESERVED:
            return None
    elif head.kind not in (Kind.BACKTICK, Kind.DQUOTE):
        return None
    j = i + 1
    if not (_is_dot(tokens, j) and _adjacent(tokens, j)):
        return RawIdentifier(None, head.text, head.start, head.end), j
    j += 1
    if j >= len(tokens) or not _adjacent(tokens, j):
        return None
    first = tokens[j]
    if first.kind in (Kind.BACKTICK, Kind.DQUOTE, Kind.SQUOTE):
        end = j + 1
        if _is_dot(tokens, end) and _adjacent(tokens, end):
            return None
        return RawIdentifier(head.text, first.text, head.start, first.end), end
    if first.kind is not Kind.WORD:
        return None
    parts = [first.text]
    end = j + 1
    while _is_dot(tokens, end) and _adjacent(tokens, end):
        nxt = end + 1
        if nxt >= len(tokens) or not _adjacent(tokens, nxt) or tokens[nxt].kind is not Kind.WORD:
            return None
        parts.append(tokens[nxt].text)
        end = nxt + 1
    return RawIdentifier(head.text, ".".join(parts), head.start, tokens[end - 1].end), end


def _is_quoted(value: str, quote: str) -> bool:
    return len(value) >= 2 and value.startswith(quote) and value.endswith(quote)


def unquote_key(key: str) -> str:
    """Strip one layer of ``'``/``"`` quotes, then of backticks, like MLflow does for keys."""
    if _is_quoted(key, "'") or _is_quoted(key, '"'):
        key = key[1:-1]
    if _is_quoted(key, "`"):
        key = key[1:-1]
    return key


def trim_backticks(entity: str) -> str:
    """Entity names may be backtick-quoted (```tags`.x``); other quotes are not stripped."""
    return entity[1:-1] if _is_quoted(entity, "`") else entity
