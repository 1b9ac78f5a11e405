"""The results store: atomic per-cell record files and DuckDB views over them."""

from aimbench.store.db import connect
from aimbench.store.records import SCHEMA_VERSION, read_record, record_path, runs_dir, write_record_atomic

__all__ = ["SCHEMA_VERSION", "connect", "read_record", "record_path", "runs_dir", "write_record_atomic"]
