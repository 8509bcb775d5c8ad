"""Experiment artifact locations as the reference stores them.

MLflow's server makes a relative local location absolute when the experiment is created,
against the server process's working directory: ``rel/dir`` becomes ``<cwd>/rel/dir`` and
``file:rel`` becomes ``file://<cwd>/rel``. Clients that log to a local location later read the
stored value from another directory, so a relative one would point somewhere else for each of
them. Anything with another scheme (``s3:``, ``mlflow-artifacts:``) is stored as given.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from pathlib import PurePosixPath


def absolute_location(location: str, cwd: PurePosixPath) -> str:
    """``location`` with a relative local path joined to ``cwd``; other locations unchanged.

    Joining keeps ``..`` segments and drops ``.`` ones, as a ``pathlib`` join does: the
    reference does not resolve the path, it only anchors it.
    """
    parts = urllib.parse.urlsplit(location)
    if parts.scheme not in ("", "file"):
        return location
    local = urllib.request.url2pathname(parts.path if parts.scheme == "file" else location)
    if PurePosixPath(local).is_absolute():
        return location
    joined = cwd.joinpath(local).as_posix()
    if parts.scheme == "":
        return joined
    return urllib.parse.urlunsplit(("file", "", joined, parts.query, parts.fragment))
