"""PySpark jobs of the THRNN pipeline: raw logs -> sessions -> Parquet splits."""
