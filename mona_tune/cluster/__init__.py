"""Where trials run: joining Ray (``join``), the nodes (``nodes``), checking them before a
search (``preflight``), filling their caches (``node_cache``) and the storage paths, local or
``s3://`` / ``gs://`` (``storage``)."""
