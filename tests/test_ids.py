"""Row ids are UUID7 in time order; pooled randomness never repeats, not even across a fork."""

from __future__ import annotations

import os
import time
import uuid

from appliance import ids


def test_uuid7_carries_version_variant_and_the_current_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    made = ids.uuid7()
    after = time.time_ns() // 1_000_000
    assert made.version == 7
    assert made.variant == uuid.RFC_4122
    assert before <= made.int >> 80 <= after


def test_uuid7s_of_later_milliseconds_sort_later() -> None:
    first = ids.uuid7()
    time.sleep(0.002)
    assert str(ids.uuid7()) > str(first)


def test_uuid4_and_trace_ids_are_version_4_and_distinct() -> None:
    made = [ids.uuid4() for _ in range(2000)]  # several refills of the pool
    assert {u.version for u in made} == {4}
    assert {u.variant for u in made} == {uuid.RFC_4122}
    assert len(set(made)) == len(made)
    trace = ids.hex_id()
    assert len(trace) == 32
    assert uuid.UUID(trace).version == 4


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    ids.uuid4()  # the pool now holds bytes the child must not reuse
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids, then leave at once
        os.close(read_end)
        os.write(write_end, "".join(ids.uuid4().hex for _ in range(8)).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        child = pipe.read().decode()
    os.waitpid(pid, 0)
    parent = "".join(ids.uuid4().hex for _ in range(8))
    assert len(child) == 8 * 32
    assert {child[i : i + 32] for i in range(0, len(child), 32)}.isdisjoint(
        {parent[i : i + 32] for i in range(0, len(parent), 32)}
    )
