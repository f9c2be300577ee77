"""The model's own 1 → 2 worker scaling on this machine, to read ``geoseg bench batch``'s speed-up against.

Two forwards side by side can each run slower than one alone (shared caches and memory bandwidth, a VM's
scheduling). This times the bench's model on its tile, through the same feed as block tasks, in local worker
processes like the batch's: one worker alone, then two at once, each after a warm-up forward. Forwards back to
back are the worst case: in a batch the workers' forwards overlap less (reads, vectorising and scene starts fall
in between), so it is a reference for the model's share of a shortfall, not a bound on the speed-up.
"""

from __future__ import annotations

from typing import Any

from geoseg.pipeline import InferConfig


def _timed_forwards(config: InferConfig, n: int) -> float:
    """Wall seconds of ``n`` tiles through the block tasks' feed in this worker (run in a worker process), after
    the warm-up forward that :func:`geoseg.bench.model_only_seconds` runs first."""
    from geoseg.bench import model_only_seconds

    return model_only_seconds(config, n, 1, want_probs=False)


def model_scaling(config: InferConfig, forwards: int = 6) -> dict[str, Any]:
    """Forwards per second with one worker alone and with two at once, and their ratio."""
    from geoseg.engine import dask_client

    with dask_client("processes", 2) as client:
        workers = sorted(client.scheduler_info()["workers"])

        def on(worker: str, n: int) -> Any:
            return client.submit(_timed_forwards, config, n, workers=[worker], allow_other_workers=False,
                                 pure=False)

        client.gather([on(w, 0) for w in workers])  # both warm before either is timed
        alone = client.gather(on(workers[0], forwards))
        pair = client.gather([on(w, forwards) for w in workers])
    rate_1, rate_2 = forwards / alone, 2 * forwards / max(pair)
    return {"forwards_per_worker": forwards, "forwards_per_s_1": round(rate_1, 3),
            "forwards_per_s_2": round(rate_2, 3), "model_speedup": round(rate_2 / rate_1, 3)}
