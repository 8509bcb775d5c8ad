"""Validation of model version sources, closing the holes behind MLflow's fixed CVEs.

A model version's source is later read by the server (download URIs, artifact proxying), so a
source must never name a local path outside the artifact store (CVE-2023-1177, CVE-2023-2780),
smuggle relative segments in any encoding (CVE-2023-2356, CVE-2024-1558), or make the server
connect to an arbitrary host. Sources that point into the artifact store must lie inside the
run or logged model the request names.
"""

from __future__ import annotations

import posixpath
import re
import urllib.parse
from dataclasses import dataclass

from evtrack.errors import invalid

HOST_ADDRESSED_SCHEMES = frozenset({"http", "https", "ftp", "sftp", "ftps"})
_LOCAL_SCHEMES = frozenset({"", "file"})


def _fully_unquoted(value: str) -> str:
    while (unquoted := urllib.parse.unquote_plus(value)) != value:
        value = unquoted
    return value


def _relative_path_error(source: str) -> Exception:
    return invalid(
        f"Invalid model version source: '{source}'. If supplying a source as an http, https, "
        "local file path, ftp, objectstore, or mlflow-artifacts uri, an absolute path must be "
        "provided without relative path references present. "
        "Please provide an absolute path."
    )


def _wrong_owner(source: str, id_name: str) -> Exception:
    return invalid(
        f"Invalid model version source: '{source}'. The {id_name} request parameter must "
        "identify the resource that contains the source."
    )


def reject_relative_references(source: str) -> None:
    decoded = _fully_unquoted(source)
    path = re.sub(r"/+", "/", urllib.parse.urlparse(decoded).path.rstrip("/"))
    if "\x00" in path or "\\" in decoded or any(p == ".." for p in decoded.split("/")):
        raise _relative_path_error(source)
    if path and posixpath.normpath(path) != path and not (path == "" or path.startswith("//")):
        raise _relative_path_error(source)


def is_local(source: str) -> bool:
    scheme = urllib.parse.urlparse(source).scheme.lower()
    # A Windows drive letter parses as a one-letter scheme: still a local path.
    return scheme in _LOCAL_SCHEMES or len(scheme) == 1


@dataclass(frozen=True)
class SourceOwner:
    """The run or logged model a source claims to come from, as the write side knows it."""

    kind: str  # "run_id" or "model_id"
    id: str
    artifact_uri: str


def within(source: str, root: str) -> bool:
    """Whether ``source`` is ``root`` or below it, comparing decoded path segments."""

    def parts(uri: str) -> tuple[str, str, tuple[str, ...]]:
        parsed = urllib.parse.urlsplit(uri)
        segments = tuple(_fully_unquoted(p) for p in parsed.path.split("/") if p)
        return parsed.scheme.lower(), parsed.netloc.lower(), segments

    s_scheme, s_netloc, s_parts = parts(source)
    r_scheme, r_netloc, r_parts = parts(root)
    return (
        s_scheme == r_scheme
        and (s_netloc == r_netloc or not s_netloc or not r_netloc)
        and s_parts[: len(r_parts)] == r_parts
    )


def validate_source(
    source: str, owner: SourceOwner | None, *, owner_kind: str, requested_id: str | None = None
) -> None:
    """Raise INVALID_PARAMETER_VALUE unless ``source`` is an acceptable model version source.

    ``owner`` is the run (``owner_kind="run_id"``) or logged model (``"model_id"``) named in
    the request, if it exists; ``None`` when the request names none or it was not found.
    ``requested_id`` is the id the request names: a ``runs:/<id>/...`` source is checked only
    against it, as the reference does (a ``runs:`` URI is resolved at download time, so the run
    need not exist yet).
    """
    parsed = urllib.parse.urlparse(source)
    scheme = parsed.scheme.lower()
    if scheme in HOST_ADDRESSED_SCHEMES and parsed.netloc:
        raise invalid(
            f"'source' cannot use the '{scheme}' scheme: the '{scheme}' scheme addresses a host "
            "other than the tracking server's configured artifact storage, so the server would "
            "connect to the host named in the URI."
        )
    if is_local(source):
        # Artifact roots of this server are never local paths, so no local source is inside one.
        raise invalid(
            f"Invalid model version source: '{source}'. To use a local path as a model version "
            f"source, the {owner_kind} request parameter has to be specified and the local path "
            "has to be contained within the artifact directory of the run specified by the "
            f"{owner_kind}."
        )
    reject_relative_references(source)
    if scheme == "runs":
        if parsed.netloc or owner_kind != "run_id":
            raise _wrong_owner(source, owner_kind)
        source_run = parsed.path.lstrip("/").split("/", 1)[0]
        if not requested_id or source_run != requested_id:
            raise _wrong_owner(source, "run_id")
        return
    if scheme == "models":
        if parsed.netloc:
            raise _wrong_owner(source, owner_kind)
        model_ref = parsed.path.lstrip("/").split("/", 1)[0]
        if model_ref.startswith("m-") and (
            owner_kind != "model_id" or owner is None or owner.id != model_ref
        ):
            raise _wrong_owner(source, "model_id")
        return
    if scheme == "mlflow-artifacts" and (owner is None or not within(source, owner.artifact_uri)):
        raise _wrong_owner(source, owner_kind)
