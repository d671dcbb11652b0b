"""``vpbatch live``: Databento's live feed through ``build``'s engine (SPEC §14).

The connection (:mod:`connection`) owns the records' order, the reconnects and the dedup;
each symbol has its recording (:mod:`recorder`) and its engine run (:mod:`job`), which is
``build``'s own job fed from a queue; :mod:`session` ties them to the viewers and the lake.
"""
