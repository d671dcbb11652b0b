"""Databento MBO days into the lake, with the cost known before anything is spent.

The flow is two steps so a caller can show the cost and ask before paying:
:func:`plan_download` (free metadata calls: available range, symbology, record counts, cost)
and :func:`run_download` (the paid ``timeseries.get_range`` calls). Every file is streamed
into a temporary name beside its final place, checked (DBN header matches the request, record
count matches ``metadata.get_record_count``) and only then renamed, so a file under its final
name is always complete and a re-run skips it. Nothing paid for is thrown away: cut streams
are resumed, a count that differs is kept under a marked name. Decisions:
``docs/download.md``.
"""

from __future__ import annotations

from collections.abc import Callable

import databento as db

from vpbatch.errors import DownloadError, OutputError
from vpbatch.ingest.download_fetch import Fetched, fetch_day
from vpbatch.ingest.download_files import (
    MISMATCH_MARK,
    PART_SUFFIX,
    PARTIAL_SUFFIX,
    SYMBOLOGY_JSON,
    count_records,
    merge_symbology,
    mismatch_path,
    open_dbn,
    partial_path,
)
from vpbatch.ingest.download_plan import (
    DEFINITION,
    MBO,
    PARENT_SUFFIX,
    RESOLVE_BATCH,
    DayFile,
    DownloadRequest,
    Plan,
    check_cost,
    open_client,
    plan_download,
    resolve_request_symbols,
    usd,
)

__all__ = [
    "DEFINITION", "MBO", "MISMATCH_MARK", "PARENT_SUFFIX", "PARTIAL_SUFFIX", "PART_SUFFIX",
    "RESOLVE_BATCH", "SYMBOLOGY_JSON", "DayFile", "DownloadRequest", "Fetched", "Plan",
    "check_cost", "count_records", "merge_symbology", "mismatch_path", "open_client",
    "open_dbn", "partial_path", "plan_download", "resolve_request_symbols", "run_download",
    "usd",
]


def run_download(client: db.Historical, plan: Plan,
                 on_file: Callable[[Fetched], None] | None = None) -> list[Fetched]:
    """Fetch every file of ``plan`` (after :func:`check_cost` and any confirmation).

    Writes ``symbology.json`` first, then each file through a temporary name. A file whose
    record count differs is kept under a marked name and the run goes on with the other
    files; the run then ends with an error naming it.

    Raises
    ------
    DownloadError
        A file that keeps failing after the retries (earlier files stay complete, what
        arrived of this one is kept for the next run), or files kept with a record count
        that differs.
    OutputError
        The lake cannot be written.
    """
    check_cost(plan)
    if not plan.targets:
        return []
    try:
        plan.folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{plan.folder}: cannot create ({exc.strerror or exc})") from None
    merge_symbology(plan.folder, plan.symbology)
    done: list[Fetched] = []
    for i, target in enumerate(plan.targets, 1):
        label = f"[{i}/{len(plan.targets)}] {target.day} {target.schema}"
        fetched = fetch_day(client, plan, target, label)
        done.append(fetched)
        if on_file is not None:
            on_file(fetched)
    differ = [f for f in done if not f.complete]
    if differ:
        raise DownloadError(_mismatch_message(differ))
    return done


def _mismatch_message(differ: list[Fetched]) -> str:
    """One line naming each file kept with a record count that differs, and what to do."""
    def one(f: Fetched) -> str:
        day_file = f.path.name.replace(f".{MISMATCH_MARK}", "")
        assert f.expected is not None
        again = ("also after asking once more for the rest" if f.records < f.expected
                 else "more than counted, not asked again")
        return (f"{day_file}: {f.records:,} records received, {f.expected:,} expected "
                f"(metadata.get_record_count), {again}; kept as {f.path.name} "
                f"(about {usd(f.billed)} billed)")

    if len(differ) == 1:
        return (f"{one(differ[0])}: check it with `vpbatch info`, rename it to the day "
                f"file's name to use it, or --force to fetch it again")
    return (f"{len(differ)} files kept with a record count that differs: "
            + "; ".join(one(f) for f in differ) + ": check them with `vpbatch info`, rename "
            "one to its day file's name to use it, or --force to fetch them again")
