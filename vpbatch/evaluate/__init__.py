"""``vpbatch evaluate`` (SPEC §13): targets, predictors, walk-forward thresholds.

Block-bootstrap statistics in :mod:`~vpbatch.evaluate.stats`, output in
:mod:`~vpbatch.evaluate.report`.
"""
