"""MLflow tracking of searches: parent/child runs, embedders, the registry, reading the best."""
