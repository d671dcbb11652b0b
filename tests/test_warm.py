"""``make install`` fills numba's cache with every kernel outside the engine (``python -m
cli.warm``): the commands' real calls then need no version of a kernel that the warm-up did not
make, so no first ``serve``, ``evaluate``, ``fit`` or ``build --model`` compiles one (issue 22).

Checked in a fresh process, where a dispatcher's ``signatures`` are exactly the versions that
process compiled or loaded: those after :func:`cli.warm.load_kernels` must be all that the real
paths (a built day's features, a model's scores, the viewer on engine output and on Parquet,
evaluate's bootstrap) end up with.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The kernels the commands call from Python (the rest are inlined into them).
KERNELS = ("vpbatch.store.grid_columns._split", "vpbatch.store.grid_columns._state_times",
           "vpbatch.serve.view_kernel.grid_forces", "vpbatch.evaluate.stats._sum_drawn_blocks",
           "vpbatch.fit.features.add_band_sums", "vpbatch.fit.features.add_band_sums_of_rows",
           "vpbatch.fit.model.model_probabilities")

_SCRIPT = textwrap.dedent("""
    import datetime as dt, json, sys
    from pathlib import Path
    import numpy as np
    import pyarrow.parquet as pq
    from numba.core.registry import CPUDispatcher
    import importlib
    import cli.warm

    # (import_module: ``vpbatch.fit.features`` is also the name of a function of vpbatch.fit)
    MODULES = [importlib.import_module(f"vpbatch.{name}") for name in (
        "evaluate.stats", "fit.features", "fit.model", "serve.view_kernel", "store.grid_columns")]
    stats = MODULES[0]

    def versions():
        return {f"{m.__name__}.{name}": sorted(str(s) for s in k.signatures)
                for m in MODULES for name, k in vars(m).items()
                if isinstance(k, CPUDispatcher) and k.py_func.__module__ == m.__name__}

    cli.warm.load_kernels()
    warmed = versions()

    from vpbatch.build.pipeline import build
    from vpbatch.build.request import BuildRequest
    from vpbatch.config import EngineConfig
    from vpbatch.fit.online import ModelScorer
    from vpbatch.fit import fit_models, write_model_file
    from vpbatch.serve.view_numpy import NumpyGridView, StateConverter
    from vpbatch.book.engine import Engine
    from vpbatch.ingest.reader import open_mbo
    from vpbatch.store.schema import GRID_LAYOUT, grid_to_arrow, state_times
    from vpbatch.synth import synth_to_lake

    lake, day = Path(sys.argv[1]), dt.date(2026, 2, 6)
    synth_to_lake(lake, "MNQH6", day, records=30_000, seed=3, informed=0.3)
    build(BuildRequest(symbol="MNQH6", day=day, lake=lake, use_cache=False))
    model_file = write_model_file(  # fit: a day's bands, the models' scores
        fit_models(lake, "MNQH6", day, models=["vp+l1"], targets=["event_1"]),
        lake / "model.json")
    result = build(BuildRequest(symbol="MNQH6", day=day, lake=lake, use_cache=False,
                                force=True, scorer=ModelScorer.from_file(model_file)))
    cfg = EngineConfig()
    view = NumpyGridView({"config": cfg.to_dict(), "writer": {"grid_layout": GRID_LAYOUT}})
    view(pq.read_table(next(Path(result.partitions["vp_grid"]).glob("*.parquet"))))
    engine = Engine(cfg, bucket=250_000_000)  # the viewer of a raw (unbuilt) day
    emitted = engine.process(np.concatenate(list(open_mbo(next(lake.rglob("*.dbn.zst")))
                                                 .iter_chunks(symbol="MNQH6"))))
    view(grid_to_arrow(emitted.grid, state_times(emitted.grid["event_id"],
                                                 emitted.snapshots["event_id"],
                                                 emitted.snapshots["ts_event"])))
    StateConverter(cfg).warm()  # the live viewer's states
    stats.block_bootstrap(np.random.default_rng(1).normal(size=(64, 5)),
                          stats.Bootstrap(resamples=50), np.random.default_rng(2))
    print(json.dumps({"warmed": warmed, "after": versions()}))
""")


def test_every_kernel_a_command_calls_is_warmed_at_install(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path / "lake")], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    warmed, after = report["warmed"], report["after"]
    for kernel in KERNELS:
        assert warmed[kernel], f"{kernel} not warmed"
    assert {k: sorted(set(v) - set(warmed[k])) for k, v in after.items()
            if set(v) - set(warmed[k])} == {}
