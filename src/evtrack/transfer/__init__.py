"""Moving data in and out: import from a live MLflow server, export and load evtrack's log.

``import_mlflow`` copies an MLflow tracking server (REST API) into evtrack through the
domain's import commands; ``export_log`` and ``import_log`` write the event log to a
directory in a documented, versioned format (``docs/export-format.md``) and load it into an
empty database. ``open_target`` builds what they write into, as the server would.
"""

from evtrack.transfer._archive_dir import (
    FORMAT_VERSION,
    ArchiveError,
    ArchiveReport,
    export_log,
    import_log,
    read_manifest,
)
from evtrack.transfer._mlflow_import import ImportOptions, ImportReport, import_mlflow
from evtrack.transfer._mlflow_source import MlflowSource, SourceError
from evtrack.transfer._source_db import PointSource, open_point_source
from evtrack.transfer._target import Target, open_target

__all__ = [
    "FORMAT_VERSION",
    "ArchiveError",
    "ArchiveReport",
    "ImportOptions",
    "ImportReport",
    "MlflowSource",
    "PointSource",
    "SourceError",
    "Target",
    "export_log",
    "import_log",
    "import_mlflow",
    "open_point_source",
    "open_target",
    "read_manifest",
]
