"""Everything that reads or fetches DBN.

The MBO reader with its input digest and read-ahead thread, ``vpbatch download`` and
``vpbatch info``.
"""
