"""Wire types: the JSON shapes of the MLflow REST API, shared by server and client."""
