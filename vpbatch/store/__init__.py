"""The lake: every path and every byte written or read there.

Layout, partitions, schema, the grid's stored columns, the writer, partition locks, the
book cache and the crash-safe file helpers. No other package builds lake paths itself.
"""
