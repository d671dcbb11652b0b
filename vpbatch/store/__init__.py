"""The lake: every path and every byte written or read there, on a folder or an object store.

Layout, partitions, schema, the grid's stored columns, the writer, partition locks (a folder
renamed into place, or a lease object on a store), the book cache, the crash-safe file helpers
and the one filesystem layer (:mod:`vpbatch.store.fs`). No other package builds lake paths
itself.

The API for readers (``sql``, ``verify``, ``plot``, ``report``, ``evaluate``, ``serve``, ``live``)::

    from vpbatch.store import open_lake, list_partitions, partition_manifest

    lake = open_lake(url_or_path)          # "lake", Path("/data/lake"), "s3://bucket/prefix"
    lake.check()                            # StoreError (exit 3) naming the URL if unusable
    for part in list_partitions(lake, "vp_grid"):       # committed builds only, sorted
        part.product_type, part.symbol, part.dt         # the hive keys
        part.part_url                                   # the Parquet file's location
        partition_manifest(part)                        # the build's _MANIFEST.json
    committed_partitions(lake)              # {table: [Partition]} in one listing
    find_partition(lake, "vp_snapshot", "future_mbo", "MNQH6", "2026-02-06")  # or None
    is_complete(lake, product, day)         # every core table of one build committed
    lake.open_input(location)               # a seekable file (range requests on a store)
    lake.arrow_filesystem(), lake.arrow_path(location)  # pyarrow (pq.ParquetFile, datasets)
    lake.attach(duckdb_connection)          # DuckDB reads the locations (no extension download)
    lake.polars_scan([location, ...])       # a polars LazyFrame
    find_raw_location(lake, product, day)   # a raw MBO file; lake.download(location, path)

Locations are strings: a path for a folder lake, an ``s3://`` URL on a store. A folder lake
keeps its ``Path`` API (``Partition.path``, ``gold_partition``, ``find_raw_file``).
"""

from vpbatch.store.fs import Lake, ObjectInfo, open_lake
from vpbatch.store.lake import find_definition_location, find_raw_location, raw_location
from vpbatch.store.partitions import (
    Partition,
    committed_partitions,
    find_partition,
    is_complete,
    list_partitions,
    partition_manifest,
)

__all__ = ["Lake", "ObjectInfo", "Partition", "committed_partitions", "find_definition_location",
           "find_partition", "find_raw_location", "is_complete", "list_partitions",
           "open_lake", "partition_manifest", "raw_location"]
