"""The names :mod:`mlbatch.bench`'s fused pipeline imports from the publish code, where they lived
before the publish was split by job. New code imports the modules themselves."""

from mlbatch.appdb.checksum import RowChecksum
from mlbatch.appdb.mysql_load import LoadSource
from mlbatch.appdb.mysql_publish import publish_mysql
from mlbatch.appdb.pipes import piped_source, piped_sources
from mlbatch.appdb.tsv import tsv_chunk

__all__ = ["LoadSource", "RowChecksum", "piped_source", "piped_sources", "publish_mysql", "tsv_chunk"]
