"""The query side: reads of the read models, rendered as MLflow wire types."""
