"""Validate, normalise and contain the artifact paths clients send.

Every artifact path arrives from the network (a URL path segment or a ``path=`` query value)
and ends up as a file name under a local root or as an object key under an S3 prefix. Both
must stay inside their root, and every spelling of a path must map to exactly one object in
every store, so that what one backend treats as "the same file" the other does too.

The rules mirror MLflow's ``validate_path_is_safe`` (``mlflow/utils/uri.py``) where MLflow is
safe, and are stricter where MLflow relies on the host OS or passes ambiguity through:

* Percent-decoding is repeated until the value stops changing, as MLflow does. aiohttp has
  already decoded once; decoding to a fixed point means ``%2e%2e`` and ``%252e%252e`` are
  seen as ``..``, and it keeps names self-consistent: the listing returns the decoded name,
  and the client's next request for that name decodes to the same string.
* Backslashes are rejected on every OS (MLflow only rejects them on Windows): on S3 a
  backslash is an ordinary key character, on a Windows-hosted root it is a separator.
* Control characters are rejected (MLflow percent-escapes them into the file name): NUL
  truncates C paths and CR/LF would otherwise reach the ``Content-Disposition`` header.
* ``.`` segments are rejected rather than normalised (MLflow answers 500 for them on upload
  and 404 on download), and any ``scheme:`` in the first segment is rejected because
  MLflow's client and stores would parse such a path as a URI (``file:``, ``s3:``, ``C:``).
* Empty segments (``a//b``, a trailing slash) collapse, as they do in MLflow; the result is
  canonical, so ``a//b`` and ``a/b`` are the same object in every store.
* Paths that Unicode compatibility normalisation (NFKC) changes are rejected, and so are the
  look-alike dots and slashes that NFKC leaves alone (U+2215 DIVISION SLASH, U+29F8 BIG
  SOLIDUS ...): fullwidth dots and a fullwidth solidus (U+FF0E, U+FF0F) read as ``../`` to any
  tool or store that normalises, and a name a store or filesystem may normalise cannot map to
  exactly one object.

An upload must also be stored under exactly the name it asked for
(:func:`normalize_upload_path`): a path that only percent-decoding or collapsing would make
valid (``a//b``, ``a%2520b``) is refused rather than silently renamed.
"""

from __future__ import annotations

import os
import posixpath
import re
import unicodedata
import urllib.parse
from pathlib import Path

from evtrack.errors import EvtrackError, invalid

INVALID_PATH_MESSAGE = "Invalid path"

# RFC 3986 scheme followed by ':'; also matches Windows drive letters ("C:").
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
# Enough for any honest client (they encode at most once); MLflow gives up after 10 too.
_MAX_DECODE_ROUNDS = 10
# Dots, slashes and backslashes in other scripts and symbol blocks that NFKC keeps as they are
# (the fullwidth and small forms, U+FF0E, U+FF0F, U+FE52 ..., NFKC maps to ASCII and the NFKC
# check refuses): each reads as a separator or a dot to a human and to some tools.
_LOOKALIKES = frozenset(
    "\u2024\u2025\u2026"  # one/two dot leader, ellipsis (NFKC maps them too; listed for clarity)
    "\u2044\u2215\u29f8\u2571\u27cb"  # fraction slash, division slash, big solidus, ...
    "\u2216\u29f5\u29f9\u2572\u27cd\ufe68\uff3c"  # set minus, reverse solidus forms
    "\u3002\uff61\u0589\u06d4\u2e3c"  # ideographic and other full stops
    "\u0338\u20e5"  # combining long solidus overlay, combining reverse solidus overlay
)


def invalid_path() -> EvtrackError:
    """The error MLflow returns for every unsafe path (400 INVALID_PARAMETER_VALUE)."""
    return invalid(INVALID_PATH_MESSAGE)


def _decode_fully(value: str) -> str:
    """Percent-decode until stable, so no encoding depth can smuggle a forbidden character.

    Invalid UTF-8 after decoding is rejected instead of being replaced by U+FFFD, which
    would silently map distinct requests onto one name.
    """
    for _ in range(_MAX_DECODE_ROUNDS):
        try:
            decoded = urllib.parse.unquote(value, errors="strict")
        except UnicodeDecodeError:
            raise invalid_path() from None
        if decoded == value:
            return value
        value = decoded
    raise invalid_path()


def normalize_artifact_path(raw: str, *, allow_root: bool = False) -> str:
    """Return the canonical relative POSIX form of a client-supplied artifact path.

    Raises 400 INVALID_PARAMETER_VALUE "Invalid path" for anything that could leave the
    artifact root or that different stores could read differently. ``allow_root`` permits the
    empty path (the root itself), which only listing may name.
    """
    path = _decode_fully(raw)
    if (
        "#" in path
        or "\\" in path
        or any(ord(c) < 0x20 or ord(c) == 0x7F or c in _LOOKALIKES for c in path)
        or unicodedata.normalize("NFKC", path) != path
        or path.startswith("/")
        or _SCHEME_RE.match(path)
    ):
        raise invalid_path()
    # Empty segments (a//b, a trailing slash) are dropped: the canonical form is what every
    # store sees, so the spellings cannot diverge between backends.
    segments = [s for s in path.split("/") if s]
    if any(s in (".", "..") for s in segments):
        raise invalid_path()
    rel = "/".join(segments)
    if not rel and not allow_root:
        raise invalid_path()
    return rel


def normalize_upload_path(raw: str) -> str:
    """The path an upload is stored under, which must be the very name the client asked for.

    On top of :func:`normalize_artifact_path`'s rules, a path that percent-decoding, collapsing
    of empty segments or ``posixpath.normpath`` would change is refused with "Invalid path":
    storing ``a//b`` as ``a/b`` or ``a%2520b`` as ``a b`` would answer 200 for a file the
    client then cannot find under its own name.
    """
    rel = normalize_artifact_path(raw)
    if rel != raw or posixpath.normpath(raw) != raw:
        raise invalid_path()
    return rel


def contained(root: Path, rel: str) -> Path:
    """Join ``rel`` to ``root``, resolve symlinks, and insist the result is still under root.

    ``rel`` must already be normalised; this is the second line of defence against a symlink
    inside the root pointing outside it, which no amount of string checking can catch.
    Missing trailing components are fine (``resolve`` is not strict), so it works for
    uploads to paths that do not exist yet.
    """
    real_root = root.resolve()
    if rel != normalize_artifact_path(rel, allow_root=True):
        raise invalid_path()
    target = real_root.joinpath(*rel.split("/")) if rel else real_root
    resolved = Path(os.path.realpath(target))
    if not resolved.is_relative_to(real_root):
        raise invalid_path()
    return resolved
