"""Mutation check: each quirk the generator reaches is caught when its handler is broken.

For every case of issue 8 there is a *mutant*: a one-spot edit of the kernel source (or of
the reader's instrument/publisher filter) that gets exactly that case wrong. The mutant is
compiled from the edited source as a fresh module, swapped into the engine facade, and the
compiled-vs-reference property of tests/book/test_engine_vs_reference.py is run on the
ordinary generator (tests/strategies.py, derandomized). The mutant must be *killed*: some
generated stream must make the property fail. The unmutated kernels must pass the same
streams.

The kernels run as plain Python (``NUMBA_DISABLE_JIT=1``; numba's record access comes from
vpbatch/book/pure_python.py), so a mutant costs no compilation. Run it:

    NUMBA_DISABLE_JIT=1 .venv/bin/python -m tests.book.mutations            # every mutant
    NUMBA_DISABLE_JIT=1 .venv/bin/python -m tests.book.mutations band_edge  # one of them

``make test`` runs it through tests/book/test_mutations.py. A mutant whose ``old`` text no
longer occurs exactly once in the source is an error, so the list cannot rot silently.
"""

from __future__ import annotations

import inspect
import sys
import time
import types
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

#: Examples tried per mutant before it counts as surviving (hypothesis stops at the first kill).
MAX_EXAMPLES = 300
#: Examples the unmutated kernels must pass (the same derandomized streams).
BASELINE_EXAMPLES = 40


class Mutant(NamedTuple):
    name: str
    case: str  # the issue-8 case it targets
    module: str  # "kernels" or "reader"
    old: str
    new: str


MUTANTS: tuple[Mutant, ...] = (
    Mutant("duplicate_id_depth_after_removal", "duplicate live id, same bucket (the bug)",
           "kernels",
           "    n = record_touch(st, prm, tch, 0, price, float(size), 0.0, 0.0)\n"
           "    slot = find(st.orders, oid)\n"
           "    if slot >= 0:\n"
           "        st.anomalies[AN_DUPLICATE_ID] += 1\n"
           "        reduce_order(st, prm, slot, st.orders[slot].size)\n",
           "    slot = find(st.orders, oid)\n"
           "    if slot >= 0:\n"
           "        st.anomalies[AN_DUPLICATE_ID] += 1\n"
           "        reduce_order(st, prm, slot, st.orders[slot].size)\n"
           "    n = record_touch(st, prm, tch, 0, price, float(size), 0.0, 0.0)\n"),
    Mutant("duplicate_id_old_order_stays", "duplicate live id, another bucket", "kernels",
           "        reduce_order(st, prm, slot, st.orders[slot].size)\n"
           "    insert_order(st, prm, oid, side, price, size, 0)\n",
           "        delete_slot(st.orders, slot)\n"
           "        st.sc[0].n_orders -= 1\n"
           "    insert_order(st, prm, oid, side, price, size, 0)\n"),
    Mutant("side_n_trade_is_sell", "side N trades", "kernels",
           "            elif rec.side == SIDE_ASK:\n",
           "            else:\n"),
    Mutant("undefined_price_add_accepted", "undefined prices", "kernels",
           "    if price == UNDEF_PRICE:\n"
           "        st.anomalies[AN_UNDEF_PRICE] += 1\n"
           "        return False\n",
           "    if False:\n"
           "        return False\n"),
    Mutant("zero_size_add_accepted", "zero-size adds", "kernels",
           "    if size == 0:\n"
           "        st.anomalies[AN_ZERO_SIZE] += 1\n"
           "        return False\n",
           "    if False:\n"
           "        return False\n"),
    Mutant("unknown_cancel_not_counted", "unknown-id C", "kernels",
           "        st.anomalies[AN_CANCEL_UNKNOWN] += 1\n",
           ""),
    Mutant("unknown_modify_ignored", "unknown-id M", "kernels",
           "        st.anomalies[AN_MODIFY_UNKNOWN] += 1\n"
           "        if not valid_add(st, price, side, size):\n",
           "        st.anomalies[AN_MODIFY_UNKNOWN] += 1\n"
           "        if True:\n"),
    Mutant("unknown_fill_no_touch", "unknown-id F", "kernels",
           "        st.anomalies[AN_FILL_UNKNOWN] += 1\n"
           "        if price == UNDEF_PRICE:\n",
           "        st.anomalies[AN_FILL_UNKNOWN] += 1\n"
           "        if True:\n"),
    Mutant("pending_fill_lost_between_events", "F in one event, its C in a later one",
           "kernels",
           "    sc.t = t_new\n"
           "    if not sc.started:\n",
           "    if t_new > sc.t:\n"
           "        st.orders.pending[:] = 0\n"
           "    sc.t = t_new\n"
           "    if not sc.started:\n"),
    Mutant("modify_price_ignores_pending", "M after a partial F", "kernels",
           "    pull = consume_pending(st, slot, q0)\n",
           "    pull = q0\n"),
    Mutant("off_tick_walk_steps_by_tick", "off-tick prices", "kernels",
           "    if sc.off_tick_levels > 0:\n",
           "    if False:\n"),
    Mutant("off_tick_mode_never_ends", "off-tick flag reset (issue 8 review)", "kernels",
           "            sc.off_tick_levels -= 1\n",
           "            pass\n"),
    Mutant("snapshot_drives_clock", "snapshot records with historical ts_event", "kernels",
           "    if not snapshot:\n"
           "        advance_clock(st, prm, np.int64(rec.ts_event), out)\n",
           "    if not snapshot:\n"
           "        advance_clock(st, prm, np.int64(rec.ts_event), out)\n"
           "    elif sc.started:\n"
           "        sc.t = np.int64(rec.ts_event)\n"),
    Mutant("clock_not_monotone", "ts_event going backwards", "kernels",
           "    t_new = max(sc.t, ts_event) if sc.started else ts_event\n",
           "    t_new = ts_event\n"),
    Mutant("clear_keeps_book_consistent", "R mid-stream (Nasdaq R without F_SNAPSHOT)",
           "kernels",
           "    if rec.action == ACTION_CLEAR:\n"
           "        sc.consistent = False\n",
           ""),
    Mutant("snapshot_ends_only_at_f_last", "fresh snapshot without R or F_LAST", "kernels",
           "    if sc.in_snapshot:\n"
           "        sc.in_snapshot = False\n"
           "        sc.consistent = True\n"
           "        resync_rest_memory(st)\n"
           "\n"
           "\n"
           "@hot_stage\n"
           "def apply_record(",
           "\n"
           "\n"
           "@hot_stage\n"
           "def apply_record("),
    Mutant("packets_at_one_time_not_coalesced", "several packets at one timestamp",
           "kernels",
           "    if sc.t > c.t_b:\n",
           "    if sc.t >= c.t_b:\n"),
    Mutant("band_edge_exclusive", "books near the edges of the band", "kernels",
           "            if abs(t.bucket - sc.spot) <= prm.band:\n",
           "            if abs(t.bucket - sc.spot) < prm.band:\n"),
    Mutant("filter_ignores_publisher", "several instruments and publishers interleaved",
           "reader",
           "    keep = ((records[\"instrument_id\"] == selection.instrument_id)\n"
           "            & (records[\"publisher_id\"] == selection.publisher_id))\n",
           "    keep = records[\"instrument_id\"] == selection.instrument_id\n"),
)


def mutated_module(module: types.ModuleType, old: str, new: str) -> types.ModuleType:
    """``module`` re-executed from its source with ``old`` replaced by ``new`` (once)."""
    source = inspect.getsource(module)
    count = source.count(old)
    if count != 1:
        raise ValueError(f"mutant text occurs {count} times in {module.__name__}, expected 1:"
                         f" {old.splitlines()[0]!r}")
    name = module.__name__ + "_mutant"
    mutant = types.ModuleType(name)
    mutant.__file__ = module.__file__
    sys.modules[name] = mutant  # dataclasses look their module up while the body runs
    try:
        exec(compile(source.replace(old, new), f"<mutant of {module.__name__}>", "exec"),
             mutant.__dict__)
    finally:
        del sys.modules[name]
    return mutant


def property_holds(max_examples: int, kernels: types.ModuleType, select: Callable[..., Any]
                   ) -> tuple[bool, int, str]:
    """Run the futures property with these kernels and filter: (held, examples run, error)."""
    from tests.book import test_engine_vs_reference as prop
    from tests.strategies import FUTURE_TICK, build_stream, intents, own_records
    from vpbatch.book import engine
    from vpbatch.config import EngineConfig

    ran = 0

    @settings(max_examples=max_examples, derandomize=True, database=None, deadline=None,
              phases=[Phase.generate], suppress_health_check=list(__import__(
                  "hypothesis").HealthCheck))
    @given(intents, st.sampled_from(["event", "packet", "25ms", "100ms"]),
           st.sampled_from(prop.K_BANDS), st.booleans())
    def check(plan: list[tuple], sample: str, k_band: tuple[int, int], foreign: bool) -> None:
        nonlocal ran
        ran += 1
        K, band = k_band
        records = build_stream(plan, foreign=foreign)
        prop._compare(select(records, prop._OWN), EngineConfig.from_sample(sample, K=K,
                      band=band), FUTURE_TICK, FUTURE_TICK, own=own_records(records))

    saved = engine.kernels
    engine.kernels = kernels  # type: ignore[attr-defined]
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            check()
    except Exception as exc:
        lines = str(exc).strip().splitlines() or [""]
        return False, ran, f"{type(exc).__name__}: {lines[0][:80]}"
    finally:
        engine.kernels = saved  # type: ignore[attr-defined]
    return True, ran, ""


def _no_source_constants() -> None:
    """Generate from the strategies and the seed alone.

    Hypothesis (>= 6.1xx) also draws literal constants mined from every local module that is
    imported, so any edit anywhere in vpbatch would shift the derandomized streams and could
    let a mutant slip past its budget; this check must depend on the generator only.
    """
    from hypothesis.internal.conjecture import providers

    empty = providers.Constants()
    providers._get_local_constants = lambda: empty  # type: ignore[attr-defined]


def main(names: list[str]) -> int:
    from numba.core import config

    _no_source_constants()

    from vpbatch.book import kernels
    from vpbatch.ingest import reader

    if not config.DISABLE_JIT:
        print("run with NUMBA_DISABLE_JIT=1 (mutants are plain Python)", file=sys.stderr)
        return 2
    unknown = set(names) - {m.name for m in MUTANTS}
    if unknown:
        print(f"unknown mutant(s): {sorted(unknown)}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    held, ran, error = property_holds(BASELINE_EXAMPLES, kernels, reader.select_records)
    print(f"baseline (unmutated): {'passes' if held else 'FAILS: ' + error} ({ran} examples, "
          f"{time.perf_counter() - t0:.1f} s)")
    survivors = [] if held else ["baseline"]
    for m in MUTANTS:
        if names and m.name not in names:
            continue
        t0 = time.perf_counter()
        if m.module == "kernels":
            held, ran, error = property_holds(MAX_EXAMPLES, mutated_module(kernels, m.old, m.new),
                                              reader.select_records)
        else:
            held, ran, error = property_holds(
                MAX_EXAMPLES, kernels, mutated_module(reader, m.old, m.new).select_records)
        verdict = "SURVIVED" if held else f"killed at example {ran}"
        print(f"{m.name:36s} [{m.case}] {verdict} ({time.perf_counter() - t0:.1f} s) {error}")
        if held:
            survivors.append(m.name)
    if survivors:
        print(f"not caught: {', '.join(survivors)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
