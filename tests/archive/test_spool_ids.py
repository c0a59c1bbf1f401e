"""Message ids (archive.spool.new_id): pooled randomness, never the same id twice."""

from __future__ import annotations

import os
import uuid

from archive.spool import new_id


def test_message_ids_are_distinct_version_4_uuids() -> None:
    ids = [new_id() for _ in range(1000)]  # several pools
    assert len(set(ids)) == 1000
    assert all(uuid.UUID(i).version == 4 for i in ids)


def test_a_forked_child_does_not_reuse_the_parents_pool() -> None:
    new_id()  # the pool holds unused bytes now
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(w, new_id().encode())
        os._exit(0)
    os.close(w)
    child = os.read(r, 100).decode()
    os.waitpid(pid, 0)
    os.close(r)
    assert child != new_id()  # the parent's next id comes from the same pool position
