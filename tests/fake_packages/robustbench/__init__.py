"""A stand-in for the ``robustbench`` package (1.1.1), for tests only: its interface written
out key for key (``model_zoo.models.model_dicts`` keyed by the ``BenchmarkDataset`` and
``ThreatModel`` enums, entries with ``model`` and ``gdrive_id``) and small networks of the
kinds its zoo holds, since the real package does not import beside the CPU torch wheel."""
