"""``vpbatch verify``: SPEC §12 invariants and the manifest, checked in DuckDB on the Parquet.

Each selected partition (one build of one ``product_type/symbol/dt``) gets these checks; ``K``,
``band``, ``sample`` and the bucket come from its ``_MANIFEST.json``. A check reports the
number of violations and the first one (lowest ``event_id``) as an example.

=================  ==========================================================================
check              what is verified
=================  ==========================================================================
``manifest``       every table of the build has ``_MANIFEST.json`` and ``_SUCCESS``, the
                   ``_SUCCESS`` build digest equals the manifest's (without timings), and the
                   manifest has the parameters verify needs (``K``, ``band``, ``sample``,
                   bucket).
``files``          each ``part-0.parquet`` has the manifest's size and sha256.
``row_counts``     Parquet row counts equal the manifest's; ``vp_grid`` rows == (2K+1) x
                   ``vp_snapshot`` rows.
``event_order``    ``vp_snapshot``: ``event_id`` strictly increasing and ``ts_event``
                   non-decreasing in file order; ``vp_grid``: ``(event_id, k)`` strictly
                   increasing in file order; ``mbp``: ``event_id`` strictly increasing.
``cardinality``    (1) every snapshot ``event_id`` has exactly 2K+1 grid rows, and no grid row
                   belongs to an ``event_id`` without a snapshot.
``completeness``   (2) per ``event_id`` the ``k`` values are exactly ``-K..K``, once each.
``finite``         (3) every float of ``vp_grid`` is finite and non-null; ``spot_price``,
                   ``regime_score``, ``regime_intensity`` too; best prices and ``mid_price``
                   are null or finite.
``continuity``     (4) for consecutive states ``P -> S`` (by ``event_id``), a cell of ``S``
                   whose absolute bucket was in ``P``'s window and whose
                   ``last_event_id <= P.event_id`` has exactly ``P``'s stored values: every
                   float except ``pressure_now``/``vacuum_now``, plus ``last_event_id`` and
                   ``last_ts`` (depths are exempt). Band-reset exemption: the cell is in the
                   fresh state (``last_event_id == 0``, ``last_ts == 0``, every stored float 0)
                   and at least one record lies between ``P`` and ``S``
                   (``S.event_id - P.event_id > 1``; spot can only have left the band and come
                   back through an intermediate record, because a cell in both windows is within
                   ``K <= band`` of both spots).
``event_update``   (5) ``sample == 'event'`` only (otherwise reported as not applicable):
                   state ``event_id``s are consecutive (every record emits), and, when the
                   build has ``mbp`` (which names each A/C/M/R/T record's action and price):
                   a non-snapshot ``A``/``M`` with a defined price, side ``B``/``A`` and size
                   > 0 touches its bucket, so if that bucket is in the window its cell has
                   ``last_event_id == event_id``; an ``R``, ``T`` or ``F_SNAPSHOT`` record
                   touches nothing, so no cell has ``last_event_id == event_id``. (``C``, ``F``
                   and ``N`` records cannot be judged from the output alone.)
``depth``          (6) ``rest_depth == bid_depth + ask_depth`` (computed so in lean files,
                   stored in first-wave ones), both ``>= 0``.
``book``           (6, "equals the book", only with ``mbp``) each state agrees with the last
                   ``mbp`` row at or before its ``event_id``: best bid/ask price and size ==
                   level 0, and each listed level's size equals (tick buckets) or is at most
                   (multi-tick buckets) the grid's depth on that side in that bucket.
``prices``         ``price == spot_price + k * bucket`` (relative 1e-9).
``provenance``     ``0 <= last_event_id <= event_id``, ``last_ts <= ts_event`` and a never
                   touched cell (``last_event_id == 0``) has ``last_ts == 0``.
``snapshot``       each snapshot row is self-consistent: a best price is null exactly when its
                   size is 0, ``mid_price`` = (bid + ask) / 2 and null when a side is empty,
                   ``crossed`` == (bid >= ask), ``book_valid`` implies both sides,
                   ``|regime_score| <= 1``, ``regime_intensity >= 0``, volumes >= 0,
                   ``n_records >= 1`` and ``n_records == event_id - previous event_id``.
=================  ==========================================================================

Two checks run a cheap pass first and their exact query only when it finds something, so a
passing build pays the cheap one and a failing one reads as it always did: ``continuity``
compares one hash of each cell's stored values (DuckDB's ``hash`` takes ``-0.0`` and ``0.0``, and
every NaN, as equal, as the value comparison does), and ``completeness`` counts rows, min and
max of ``k`` when ``event_order`` found the grid strictly ordered (no ``k`` can repeat then).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import duckdb
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from vpbatch.build.verify_sql import (
    CARDINALITY_SQL,
    COMPLETENESS_ORDERED_SQL,
    COMPLETENESS_SQL,
    CONSECUTIVE_SQL,
    CONTINUITY_HASH_SQL,
    CONTINUITY_SQL,
    DEPTH_SQL,
    FINITE_GRID_SQL,
    FINITE_SNAPSHOT_SQL,
    GRID_ORDER_SQL,
    MBP_ORDER_SQL,
    NO_TOUCH_SQL,
    PRICES_SQL,
    PROVENANCE_SQL,
    READ_SQL,
    SET_FILES_SQL,
    SNAPSHOT_ORDER_SQL,
    SNAPSHOT_SQL,
    TOP_VS_MBP_SQL,
    TOUCH_EXPECTED_SQL,
    VIEW_SQL,
    levels_vs_grid_sql,
)
from vpbatch.errors import ConfigError, InputError, OutputError, VerifyError
from vpbatch.products import resolve_product
from vpbatch.sql import CREATE_VIEW_SQL, grid_parameters, grid_select, new_connection
from vpbatch.store.files import file_sha256
from vpbatch.store.fs import Lake, open_lake
from vpbatch.store.lake import (
    GOLD_TABLES,
    MANIFEST_FILE,
    MANIFEST_VERSION,
    PART_FILE,
    SUCCESS_FILE,
    gold_folder,
    parse_date,
)
from vpbatch.store.objects import Commit, commit_dir, latest_commit, latest_commits
from vpbatch.store.partitions import build_digest, list_partitions, read_manifest, read_success

_HASH_BLOCK: Final = 8 << 20

#: Every check, in report order.
CHECKS: Final = ("manifest", "files", "row_counts", "event_order", "cardinality",
                 "completeness", "finite", "continuity", "event_update", "depth", "book",
                 "prices", "provenance", "snapshot")

# --- report -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    """One check of one partition."""

    partition: str
    name: str
    passed: bool
    violations: int
    example: str = ""


@dataclass
class VerifyReport:
    """Every check of every verified partition."""

    partitions: list[str] = field(default_factory=list)
    results: list[CheckResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.passed]

    def failed_checks(self) -> set[str]:
        """Names of the checks that failed (any partition)."""
        return {r.name for r in self.failures}

    def to_rows(self) -> list[dict[str, Any]]:
        return [{"partition": r.partition, "check": r.name,
                 "status": "ok" if r.passed else "FAIL", "violations": r.violations,
                 "example": r.example} for r in self.results]

    def format(self) -> str:
        """A plain-text table, one line per check."""
        rows = [("partition", "check", "status", "violations", "example")]
        rows += [(r.partition, r.name, "ok" if r.passed else "FAIL", str(r.violations),
                  r.example) for r in self.results]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = ["  ".join([*(row[i].ljust(widths[i]) for i in range(4)), row[4]]).rstrip()
                 for row in rows]
        total = len(self.results)
        bad = len(self.failures)
        lines.append(f"{total - bad} of {total} checks passed in {len(self.partitions)} "
                     f"partition(s)")
        return "\n".join(lines)

    def raise_for_failures(self) -> None:
        """Raise :class:`~vpbatch.errors.VerifyError` naming the failed checks, if any."""
        if self.failures:
            names = sorted({f"{r.partition}:{r.name}" for r in self.failures})
            raise VerifyError(f"{len(self.failures)} of {len(self.results)} checks failed: "
                              f"{', '.join(names)}")


# --- selection --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Key:
    product_type: str
    symbol: str
    dt: str

    @property
    def label(self) -> str:
        return f"{self.product_type}/{self.symbol}/{self.dt}"

    @property
    def values(self) -> tuple[str, str, str]:
        return self.product_type, self.symbol, self.dt

    def folder(self, lake: Path, table: str) -> Path:
        return gold_folder(lake, table, self.product_type, self.symbol, self.dt)


def _all_keys(lake: Lake) -> list[_Key]:
    """Every partition of any table, complete or not (completeness is one of the checks);
    on an object store every committed partition (nothing else is a partition there)."""
    if not lake.local:
        return [_Key(*key) for key in sorted(latest_commits(lake))]
    keys = {_Key(p.product_type, p.symbol, p.dt) for table in GOLD_TABLES
            for p in list_partitions(lake, table, complete_only=False)}
    return sorted(keys, key=lambda k: (k.product_type, k.symbol, k.dt))


def select_partitions(lake: Path | str | Lake, symbol: str | None = None,
                      day: dt.date | str | None = None, all: bool = False) -> list[str]:
    """Labels (``product_type/symbol/dt``) of the partitions :func:`verify` would check."""
    return [k.label for k in _select(open_lake(lake), symbol, day, all)]


def _select(lake: Lake, symbol: str | None, day: dt.date | str | None, all: bool) -> list[_Key]:
    if not all and symbol is None and day is None:
        raise ConfigError("verify: give --symbol and/or --dt, or --all")
    lake.check()
    keys = _all_keys(lake)
    wanted = keys
    what = []
    if symbol is not None:
        product = resolve_product(symbol)
        wanted = [k for k in wanted
                  if k.product_type == product.product_type and k.symbol == product.symbol]
        what.append(f"symbol={product.symbol}")
    if day is not None:
        iso = day.isoformat() if isinstance(day, dt.date) else parse_date(day).isoformat()
        wanted = [k for k in wanted if k.dt == iso]
        what.append(f"dt={iso}")
    if not wanted:
        have = ", ".join(f"{k.symbol}/{k.dt}" for k in keys[:10]) or "none"
        more = f" and {len(keys) - 10} more" if len(keys) > 10 else ""
        wanted_text = f"for {' '.join(what)}" if what else "in the lake"
        raise InputError(f"{lake.loc('gold')}: no partition {wanted_text} "
                         f"(have: {have}{more})")
    return wanted


# --- checks -----------------------------------------------------------------------------------


class _Partition:
    """The facts of one partition that the checks share."""

    def __init__(self, lake: Lake, key: _Key) -> None:
        self.lake = lake
        self.key = key
        #: The latest commit of the partition (object store), whose attempt is checked.
        self.commit: Commit | None = None
        self.label = key.label
        self.results: list[CheckResult] = []
        self.manifest: dict[str, Any] = {}
        self.tables: list[str] = []
        self.K = 0
        self.band = 0
        self.sample = ""
        self.bucket = 0
        self.tick = 0
        #: Object store: each table's part, downloaded once while its sha256 was checked, so
        #: that the row counts and the SQL checks read those bytes locally (a dozen queries
        #: would otherwise fetch the part a dozen times).
        self.copies: dict[str, Path] = {}
        self._scratch: tempfile.TemporaryDirectory[str] | None = None

    def add(self, name: str, violations: int, example: str = "") -> None:
        self.results.append(CheckResult(self.label, name, violations == 0, int(violations),
                                        example if violations else ""))

    def folder(self, table: str) -> str:
        """The table's files: the partition folder, or the committed attempt's prefix."""
        if self.commit is not None:
            return self.commit.folder(self.lake, table)
        return str(self.key.folder(self.lake.folder, table))

    def part(self, table: str) -> str:
        return (f"{self.folder(table)}/{PART_FILE}" if self.commit is not None
                else str(self.key.folder(self.lake.folder, table) / PART_FILE))

    # -- where the bytes are: a folder or an object store ------------------------------------

    def has_part(self, table: str) -> bool:
        return self.lake.is_file(self.part(table))

    def part_sha256(self, table: str) -> str:
        """The part's sha256; on an object store it also keeps the bytes read as the table's
        local copy (:attr:`copies`), which the later checks read."""
        if self.lake.local:
            return file_sha256(Path(self.part(table)))
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="vpbatch-verify-")
        copy = Path(self._scratch.name) / f"{table}.parquet"
        digest = hashlib.sha256()
        with self.lake.open_input(self.part(table)) as fh, open(copy, "wb") as out:
            while block := fh.read(_HASH_BLOCK):
                digest.update(block)
                out.write(block)
        self.copies[table] = copy
        return digest.hexdigest()

    def source(self, table: str) -> str:
        """Where the checks read the table: its local copy when there is one."""
        copy = self.copies.get(table)
        return str(copy) if copy is not None else self.part(table)

    def parquet(self, table: str) -> tuple[str, pafs.FileSystem | None]:
        """``(path, filesystem)`` for pyarrow's readers."""
        if self.lake.local or table in self.copies:
            return self.source(table), None
        return self.lake.arrow_path(self.part(table)), self.lake.arrow_filesystem()

    def close(self) -> None:
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    # -- manifest, files and counts (Python) ----------------------------------------------------

    def check_manifest(self) -> bool:
        problems: list[str] = []
        try:
            if self.lake.local:
                self.manifest = read_manifest(self.key.folder(self.lake.folder, "vp_snapshot"))
            else:
                self.commit = latest_commit(self.lake, *self.key.values)
                if self.commit is None:
                    raise OutputError(f"{commit_dir(self.lake, *self.key.values)}: no commit "
                                      "marker (the partition was never committed)")
                self.manifest = dict(self.commit.manifest)
        except OutputError as exc:
            self.add("manifest", 1, str(exc))
            return False
        m = self.manifest
        if m.get("manifest_version") != MANIFEST_VERSION:
            problems.append(f"manifest_version {m.get('manifest_version')!r}, "
                            f"expected {MANIFEST_VERSION}")
        tables = m.get("tables")
        self.tables = [t for t in GOLD_TABLES if isinstance(tables, dict) and t in tables]
        for needed in ("vp_snapshot", "vp_grid"):
            if needed not in self.tables:
                problems.append(f"manifest lists no {needed} table")
        try:
            self.K = int(m["config"]["K"])
            self.band = int(m["config"]["band"])
            self.sample = str(m["config"]["sample"])
            self.bucket = int(m["product"]["bucket"])
            self.tick = int(m["product"].get("tick", self.bucket))
            if self.K < 1 or self.bucket < 1:
                raise ValueError(f"K={self.K}, bucket={self.bucket}")
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"manifest lacks config.K/band/sample or product.bucket ({exc})")
        digest = build_digest(m)
        if self.commit is not None:
            problems += self._commit_problems(digest)
            self.add("manifest", len(problems), problems[0] if problems else "")
            return not any("manifest lacks" in p or "lists no" in p for p in problems)
        for table in self.tables:
            folder = self.key.folder(self.lake.folder, table)
            build = read_success(folder)
            if build is None:
                problems.append(f"{folder}: no {SUCCESS_FILE} (incomplete build)")
                continue
            if build != digest:
                problems.append(f"{folder / SUCCESS_FILE}: build {build[:12]} does not match "
                                f"the manifest ({digest[:12]})")
            if table != "vp_snapshot":
                try:
                    other = read_manifest(folder)
                except OutputError as exc:
                    problems.append(str(exc))
                    continue
                if build_digest(other) != digest:
                    problems.append(f"{folder / MANIFEST_FILE}: differs from the vp_snapshot "
                                    "manifest")
        for table in GOLD_TABLES:
            folder = self.key.folder(self.lake.folder, table)
            if table not in self.tables and folder.exists():
                problems.append(f"{folder}: table not part of the build in the manifest")
        self.add("manifest", len(problems), problems[0] if problems else "")
        return not any("manifest lacks" in p or "lists no" in p for p in problems)

    def _commit_problems(self, digest: str) -> list[str]:
        """The commit marker names this build and its tables, and each table's attempt holds
        the same manifest (object store)."""
        assert self.commit is not None
        problems = []
        if self.commit.build != digest:
            problems.append(f"{self.commit.location}: build {self.commit.build[:12]} does not "
                            f"match the manifest ({digest[:12]})")
        if sorted(self.commit.tables) != sorted(self.tables):
            problems.append(f"{self.commit.location}: tables {', '.join(self.commit.tables)} "
                            f"but the manifest lists {', '.join(self.tables)}")
        for table in self.tables:
            location = f"{self.folder(table)}/{MANIFEST_FILE}"
            try:
                other = json.loads(self.lake.read_bytes(location))
            except (OSError, ValueError) as exc:
                problems.append(f"{location}: cannot read manifest: {exc}")
                continue
            if not isinstance(other, dict) or build_digest(other) != digest:
                problems.append(f"{location}: differs from the commit's manifest")
        return problems

    def check_files(self) -> bool:
        problems: list[str] = []
        for table in self.tables:
            facts = self.manifest["tables"][table]
            path = self.part(table)
            if not self.has_part(table):
                problems.append(f"{path}: missing")
                continue
            size = self.lake.info(path).size
            if size != facts.get("bytes"):
                problems.append(f"{path}: {size} bytes, manifest says {facts.get('bytes')}")
            elif self.part_sha256(table) != facts.get("sha256"):
                problems.append(f"{path}: sha256 differs from the manifest")
        self.add("files", len(problems), problems[0] if problems else "")
        return all(self.has_part(t) for t in ("vp_snapshot", "vp_grid"))

    def check_row_counts(self) -> None:
        problems: list[str] = []
        rows: dict[str, int] = {}
        for table in self.tables:
            path = self.part(table)
            if not self.has_part(table):
                continue
            try:
                where, fs = self.parquet(table)
                rows[table] = pq.read_metadata(where, filesystem=fs).num_rows
            except (OSError, ValueError) as exc:
                problems.append(f"{path}: unreadable Parquet ({exc})")
                continue
            want = self.manifest["tables"][table].get("rows")
            if rows[table] != want:
                problems.append(f"{table}: {rows[table]} rows in Parquet, manifest says {want}")
        if "vp_snapshot" in rows and "vp_grid" in rows:
            expect = (2 * self.K + 1) * rows["vp_snapshot"]
            if rows["vp_grid"] != expect:
                problems.append(f"vp_grid: {rows['vp_grid']} rows, expected (2K+1) x "
                                f"{rows['vp_snapshot']} snapshots = {expect}")
        self.add("row_counts", len(problems), problems[0] if problems else "")

    # -- SQL checks ---------------------------------------------------------------------------

    def open(self) -> duckdb.DuckDBPyConnection:
        con = new_connection()
        self.lake.attach(con)
        for table, name in (("vp_snapshot", "v_snap"), ("vp_grid", "v_grid"), ("mbp", "v_mbp")):
            if table in self.tables and self.has_part(table):
                var = f"verify_{name}"
                con.execute(SET_FILES_SQL.format(var=var), {"files": [self.source(table)]})
                if table == "vp_grid":  # the view's columns, whatever the file layout
                    layout, params = grid_parameters(self.manifest)
                    select = grid_select(con, "verify_grid_params", layout, params,
                                         READ_SQL.format(var=var), extra=("file_row_number",))
                    con.execute(CREATE_VIEW_SQL.format(temp="TEMP ", name=name, select=select))
                else:
                    con.execute(VIEW_SQL.format(name=name, var=var))
        return con

    def params(self, sql: str) -> dict[str, Any]:
        values = {"K": self.K, "rows": 2 * self.K + 1, "bucket": self.bucket,
                  "bucket_size": self.bucket / 1e9,
                  "exact": self.tick == self.bucket}
        used = set(re.findall(r"\$([A-Za-z_]\w*)", sql))
        return {name: value for name, value in values.items() if name in used}

    def query(self, con: duckdb.DuckDBPyConnection, sqls: Sequence[str]) -> tuple[int, str]:
        return _combined([self._one(con, sql) for sql in sqls])

    def _one(self, con: duckdb.DuckDBPyConnection, sql: str) -> tuple[int, str]:
        """A query's violations and its example (``""`` when it gives none)."""
        row = con.execute(sql, self.params(sql)).fetchone() or (None,)
        n = int(row[0]) if row[0] is not None else 0
        return n, (str(row[1]) if n and len(row) > 1 and row[1] is not None else "")

    def exact_if_needed(self, con: duckdb.DuckDBPyConnection, cheap: str | None, exact: str
                        ) -> tuple[int, str]:
        """``exact``'s result, unless the ``cheap`` pass (a count) finds nothing: then none."""
        if cheap is not None and self._one(con, cheap)[0] == 0:
            return 0, ""
        return self._one(con, exact)

    def run_sql_checks(self) -> None:
        con = self.open()
        has_mbp = "mbp" in self.tables and self.has_part("mbp")
        try:
            order = [self._one(con, sql) for sql in
                     [SNAPSHOT_ORDER_SQL, GRID_ORDER_SQL] + ([MBP_ORDER_SQL] if has_mbp else [])]
            self.add("event_order", *_combined(order))
            self.add("cardinality", *self.query(con, [CARDINALITY_SQL]))
            # once the grid is in (event_id, k) order no k can repeat: count, min and max decide
            grid_ordered = order[1][0] == 0
            self.add("completeness", *self.exact_if_needed(
                con, COMPLETENESS_ORDERED_SQL if grid_ordered else None, COMPLETENESS_SQL))
            self.add("finite", *self.query(con, [FINITE_GRID_SQL, FINITE_SNAPSHOT_SQL]))
            self.add("continuity", *self.exact_if_needed(con, CONTINUITY_HASH_SQL,
                                                         CONTINUITY_SQL))
            if self.sample == "event":
                update = [CONSECUTIVE_SQL] + ([TOUCH_EXPECTED_SQL, NO_TOUCH_SQL] if has_mbp
                                              else [])
                self.add("event_update", *self.query(con, update))
            else:
                self.results.append(CheckResult(self.label, "event_update", True, 0,
                                                f"not applicable (sample={self.sample})"))
            self.add("depth", *self.query(con, [DEPTH_SQL]))
            if has_mbp:
                levels = self._mbp_levels()
                book = [TOP_VS_MBP_SQL] + ([levels_vs_grid_sql(levels)] if levels else [])
                self.add("book", *self.query(con, book))
            else:
                self.results.append(CheckResult(self.label, "book", True, 0,
                                                "not applicable (no mbp table)"))
            self.add("prices", *self.query(con, [PRICES_SQL]))
            self.add("provenance", *self.query(con, [PROVENANCE_SQL]))
            self.add("snapshot", *self.query(con, [SNAPSHOT_SQL]))
        finally:
            con.close()

    def _mbp_levels(self) -> int:
        path, fs = self.parquet("mbp")
        names = pq.read_schema(path, filesystem=fs).names
        return sum(1 for name in names if name.startswith("bid_px_"))


def _combined(results: Sequence[tuple[int, str]]) -> tuple[int, str]:
    """Several queries' results as one check's: their total and the first example."""
    return sum(n for n, _ in results), next((example for n, example in results if example), "")


def verify_partition(lake: Path | str | Lake, product_type: str, symbol: str,
                     day: str) -> list[CheckResult]:
    """Run every check on one partition (see the module docstring)."""
    part = _Partition(open_lake(lake), _Key(product_type, symbol, day))
    try:
        if part.check_manifest():
            files_ok = part.check_files()
            part.check_row_counts()
            if files_ok:
                try:
                    part.run_sql_checks()
                except duckdb.Error as exc:
                    message = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                    part.add("event_order", 1, f"DuckDB could not read the partition: {message}")
    finally:
        part.close()
    return part.results


def verify(lake: Path | str | Lake, symbol: str | None = None,
           day: dt.date | str | None = None, all: bool = False) -> VerifyReport:
    """Check SPEC §12 invariants 1-6 and the manifests of the selected partitions.

    Parameters
    ----------
    lake : Path, str or Lake
        Lake root: a folder or an object-store URL (``s3://bucket/prefix``; there the
        committed attempt of each partition is checked: each part is downloaded once, into a
        temporary folder, while its sha256 is checked, and queried there).
    symbol : str, optional
        Contract or ticker (``MNQH6``); with ``day`` one partition, alone every day.
    day : datetime.date or str, optional
        Trading day; alone, every symbol of that day.
    all : bool, default False
        Every partition in the lake.

    Returns
    -------
    VerifyReport
        One :class:`CheckResult` per check and partition; see :attr:`VerifyReport.passed`.

    Raises
    ------
    ConfigError
        When neither ``symbol``, ``day`` nor ``all`` is given.
    InputError
        When no partition matches.
    """
    store = open_lake(lake)
    keys = _select(store, symbol, day, all)
    report = VerifyReport(partitions=[k.label for k in keys])
    for key in keys:
        report.results.extend(verify_partition(store, key.product_type, key.symbol, key.dt))
    return report
