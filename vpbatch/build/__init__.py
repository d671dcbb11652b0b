"""``vpbatch build``: the request, the three-phase driver, the state stream, many days.

Also ``vpbatch verify``, which checks what a build wrote.
"""
