"""Task results pushed to the driver as events (geoseg.results): the same values as fetching them, none
fetched on a real cluster, errors still raised, and nothing left waiting."""

from __future__ import annotations

import numpy as np
import pytest
from distributed import Client, LocalCluster, as_completed

from geoseg.results import PushedResults, pushed_results, pushing


def _block_like(i: int) -> dict[str, object]:
    return {"i": i, "strip": np.arange(i, i + 50, dtype=np.int32)}


def _fails(i: int) -> None:
    raise ValueError(f"task {i} failed")


@pytest.mark.parametrize("processes", [False, True])
def test_results_are_pushed_not_fetched(processes: bool) -> None:
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=processes, dashboard_address=None) as cluster, \
            Client(cluster, set_as_default=False) as client:
        pushed = pushed_results(client)
        assert pushed_results(client) is pushed  # one per client: concurrent runs share its topic handler
        futures = [pushed.submit(client, _block_like, i) for i in range(30)]
        assert all(f.key.startswith("_block_like-") for f in futures)  # named after the function
        seen = {}
        for fut in as_completed(futures, loop=client.loop):
            value = pushed.result(fut)
            seen[value["i"]] = value
            np.testing.assert_array_equal(value["strip"], np.arange(value["i"], value["i"] + 50))
        assert sorted(seen) == list(range(30))
        assert pushed.fetched == 0 and not pushed.got and not pushed.waiting

        bad = pushed.submit(client, _fails, 7)
        with pytest.raises(ValueError, match="task 7 failed"):
            pushed.result(next(iter(as_completed([bad], loop=client.loop))))
        assert not pushed.waiting


def test_a_missed_event_falls_back_to_fetching() -> None:
    """A result whose event never came (a driver that subscribed late) is fetched as usual."""
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster, set_as_default=False) as client:
        fut = client.submit(pushing, _block_like, 3, key="_block_like-late", pure=False)
        fut.result()
        late = PushedResults(client)
        late.waiting.add(fut.key)
        assert late.result(fut)["i"] == 3 and late.fetched == 1


def test_pushing_outside_a_worker_just_calls() -> None:
    assert pushing(_block_like, 2)["i"] == 2
