"""End-to-end MLflow compatibility tests: the official mlflow client against the reference
`mlflow server` and against evtrack (see /work/shared/mlflow-compat.md)."""
