"""``queue.transaction()``: the application's writes and its jobs commit together, or
neither, on both engines."""

from __future__ import annotations

import pytest

import jobq


def _make_orders(queue: jobq.Queue) -> None:
    with queue.transaction() as tx:
        tx.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT NOT NULL)")


def _orders(queue: jobq.Queue) -> int:
    # Read through a statement whose effect is the count (no SELECT surface is offered).
    with queue.transaction() as tx:
        return tx.execute("UPDATE orders SET item = item")


def _p(queue: jobq.Queue, n: int) -> str:
    return "?" if queue.engine == "sqlite" else f"${n}"


def test_a_committed_transaction_keeps_the_writes_and_the_jobs(queue: jobq.Queue) -> None:
    _make_orders(queue)
    with queue.transaction() as tx:
        assert tx.execute(f"INSERT INTO orders (id, item) VALUES ({_p(queue, 1)}, {_p(queue, 2)})", [1, "book"]) == 1
        h = tx.enqueue("ship", {"order": 1}, key="ship-1", queue="shipping")
        again = tx.enqueue("ship", {"order": 1}, key="ship-1")
        assert again.id == h.id and again.already_existed
    assert _orders(queue) == 1
    doc = queue.get(h.id)
    assert doc["input"] == {"order": 1} and doc["queue"] == "shipping" and doc["status"] == "queued"


def test_a_rolled_back_transaction_leaves_neither(queue: jobq.Queue) -> None:
    _make_orders(queue)
    with pytest.raises(RuntimeError, match="payment declined"):
        with queue.transaction() as tx:
            tx.execute(f"INSERT INTO orders (id, item) VALUES ({_p(queue, 1)}, {_p(queue, 2)})", [1, "book"])
            h = tx.enqueue("ship", {"order": 1})
            raise RuntimeError("payment declined")
    assert _orders(queue) == 0
    with pytest.raises(jobq.NotFound):
        queue.get(h.id)
    assert queue.stats()["stats"]["total"] == 0


def test_a_failed_statement_names_what_the_database_said_and_rolls_back(queue: jobq.Queue) -> None:
    _make_orders(queue)
    with pytest.raises(jobq.DatabaseError, match="orderz"):
        with queue.transaction() as tx:
            tx.enqueue("ship", {"order": 1})
            tx.execute("INSERT INTO orderz (id) VALUES (1)")
    assert queue.stats()["stats"]["total"] == 0
    with pytest.raises(jobq.InvalidInput, match="params"):
        with queue.transaction() as tx:
            tx.enqueue("ship")
            tx.execute(f"INSERT INTO orders (id, item) VALUES ({_p(queue, 1)}, {_p(queue, 2)})", [1, object()])
    with pytest.raises(jobq.InvalidInput, match="cannot pass 1180591620717411303424"):
        with queue.transaction() as tx:
            tx.execute(f"INSERT INTO orders (id, item) VALUES ({_p(queue, 1)}, {_p(queue, 2)})", [2**70, "x"])
    assert queue.stats()["stats"]["total"] == 0 and _orders(queue) == 0


def test_a_job_enqueued_in_a_transaction_wakes_a_worker_when_it_commits(queue: jobq.Queue) -> None:
    @queue.handler("ship")
    def ship(job):
        return {"shipped": job.input["order"]}

    w = queue.worker(concurrency=1, poll_interval="1h").start()
    try:
        with queue.transaction() as tx:
            h = tx.enqueue("ship", {"order": 9})
        # The poll interval is an hour: only the commit's notification can wake the worker.
        assert h.result(timeout=20) == {"shipped": 9}
    finally:
        w.stop(grace="5s")
