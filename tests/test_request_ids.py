"""Request ids the gateway makes: random version-4 UUIDs, never repeated, also across workers
(forked processes start with the parent's memory, and these come from a pool of random bytes)."""

from __future__ import annotations

import os
import uuid

from gateway.headers import new_uuid4, request_id


def test_new_ids_are_version_4_uuids_in_canonical_form_and_all_differ() -> None:
    ids = [new_uuid4() for _ in range(3000)]  # more than one pool's worth
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == text


def test_a_forked_child_does_not_repeat_the_parents_next_ids() -> None:
    new_uuid4()  # the pool is filled, with ids to come in it
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids and leave at once
        os.write(write, ",".join(new_uuid4() for _ in range(5)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        child = pipe.read().split(",")
    parent = [new_uuid4() for _ in range(5)]
    assert len(child) == 5 and not set(child) & set(parent)


def test_a_client_uuid_is_kept_and_anything_else_replaced() -> None:
    mine = "123e4567-e89b-42d3-a456-426614174000"
    assert request_id(mine.encode()) == mine
    made = request_id(b"not-a-uuid\r\nx: y")
    assert made != "not-a-uuid" and uuid.UUID(made).version == 4
