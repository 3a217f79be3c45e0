"""The sessionized-data contract, shared by the Spark job (``jobs``), the model (``thrnn``), the generator
(``synth``), the benches and the tests; it imports neither Spark nor torch (docs/design.md §3).

- ``columns``: column names and folders of the Parquet splits, the stats.json keys (§3.3, §3.4);
- ``constants``: input formats, gap defaults, quarantine reasons, time patterns and bounds, fates (§2, §3);
- ``rules``: ``SessionRules``, the input layouts and options, the job's errors;
- ``reference``: the single-process pandas sessionizer, equal to the Spark job (§3).

The model's MLflow artifact ships this package beside ``thrnn`` and nothing of ``jobs``.
"""
