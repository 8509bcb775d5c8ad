"""evtrack: an event-sourced ML experiment tracking server that speaks the MLflow API."""

__version__ = "0.1.0"

# The MLflow version the server reports on `/version`. The client only uses it to decide
# whether OTLP span logging is available (>= 3.4), which evtrack does not serve, so it
# reports the last release before that feature.
MLFLOW_COMPAT_VERSION = "3.3.0"
