"""The warehouse side: Redshift in production, a DuckDB file in the embedded stack."""
