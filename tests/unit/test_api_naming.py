"""Google-side names: deterministic, one-to-one, within Google's id rules."""

from __future__ import annotations

import random
import re

import pytest

from gcpcall.api.naming import (
    ObjectKey,
    job_description,
    job_id,
    job_name,
    marker,
    parse_job_id,
    parse_marker,
    task_id,
    task_name,
)

ID = re.compile(r"^[A-Za-z0-9_-]{1,500}$")


def _random_name(rng: random.Random, alphabet: str, length: int) -> str:
    middle = "".join(rng.choice(alphabet) for _ in range(max(length - 2, 0)))
    edge = "abcdefghijklmnopqrstuvwxyz0123456789"
    return (rng.choice(edge) + middle + rng.choice(edge))[:length]


def test_job_id_format() -> None:
    assert job_id("prod-eu", "team-a", "scale-up.mig") == "prod-eu_team-a_scale-up_mig"
    assert job_name("my-project", "europe-west3", "prod", "team-a", "x") == (
        "projects/my-project/locations/europe-west3/jobs/prod_team-a_x")


def test_job_id_is_one_to_one_and_inverts() -> None:
    rng = random.Random(7)
    seen: dict[str, ObjectKey] = {}
    for _ in range(2000):
        key = ObjectKey(
            _random_name(rng, "ab-", rng.randint(1, 4)),
            _random_name(rng, "ab-", rng.randint(1, 4)),
            _random_name(rng, "ab.-", rng.randint(1, 6)),
        )
        jid = job_id(key.cluster, key.namespace, key.name)
        assert ID.match(jid)
        assert seen.setdefault(jid, key) == key, f"{jid} maps two objects"
        assert parse_job_id(jid) == key
    assert len(seen) > 500  # the sample really had many distinct objects


def test_job_id_fits_with_the_longest_kubernetes_names() -> None:
    jid = job_id("c" * 63, "n" * 63, "a." * 126 + "b")
    assert len(jid) <= 500
    assert ID.match(jid)


@pytest.mark.parametrize("cluster", ["", "has_underscore", "dots.bad", "c" * 64])
def test_bad_cluster_names_are_a_configuration_error(cluster: str) -> None:
    with pytest.raises(ValueError, match="clusterName"):
        job_id(cluster, "ns", "name")


def test_parse_job_id_refuses_foreign_ids() -> None:
    assert parse_job_id("someone-elses-job") is None
    assert parse_job_id("a_B_c") is None  # namespaces are lower case
    assert parse_job_id("a_b__c") is None


def test_marker_round_trip_and_description() -> None:
    assert marker("prod", "team-a", "x.y") == "managed-by: gcpcall-operator prod/team-a/x.y"
    desc = job_description("Scale the MIG up\nat 5 past", "prod", "team-a", "x.y")
    assert desc == "Scale the MIG up\nat 5 past\nmanaged-by: gcpcall-operator prod/team-a/x.y"
    assert parse_marker(desc) == ObjectKey("prod", "team-a", "x.y")
    assert job_description("", "prod", "team-a", "x") == marker("prod", "team-a", "x")


def test_long_description_is_shortened_and_keeps_the_marker() -> None:
    desc = job_description("word " * 200, "c" * 63, "n" * 63, "m" * 253)
    assert len(desc) <= 500
    assert desc.endswith(marker("c" * 63, "n" * 63, "m" * 253))
    assert "...\n" in desc
    assert parse_marker(desc) == ObjectKey("c" * 63, "n" * 63, "m" * 253)


def test_parse_marker_says_whose_job_it_is() -> None:
    assert parse_marker("") is None
    assert parse_marker("a job someone made in the console") is None
    assert parse_marker("managed-by: gcpcall-operator a/b") is None
    # A description quoting another object's marker: the last (ours) wins.
    quoted = "copy of\nmanaged-by: gcpcall-operator other/ns/job\n" + marker("prod", "ns", "job")
    assert parse_marker(quoted) == ObjectKey("prod", "ns", "job")


def test_task_id_is_deterministic_hashed_and_readable() -> None:
    tid = task_id("prod", "team-a", "launch.2026-11-22", "uid-1")
    assert tid == task_id("prod", "team-a", "launch.2026-11-22", "uid-1")
    prefix, rest = tid.split("_", 1)
    assert re.fullmatch(r"[0-9a-f]{16}", prefix)
    assert rest == "team-a_launch_2026-11-22"
    assert ID.match(tid)


def test_task_id_changes_with_every_input() -> None:
    base = ("prod", "team-a", "launch", "uid-1")
    ids = {task_id(*base)}
    for i in range(4):
        changed = list(base)
        changed[i] = changed[i] + "x"
        ids.add(task_id(*changed))
    assert len(ids) == 5  # a recreated object (new uid) is a new task


def test_task_name_and_length_limit() -> None:
    name = task_name("my-project", "us-central1", "etl", "prod", "team-a", "t", "u")
    assert name.startswith("projects/my-project/locations/us-central1/queues/etl/tasks/")
    longest = task_id("c" * 63, "n" * 63, "a." * 126 + "b", "u" * 36)
    assert len(longest) <= 500
    assert ID.match(longest)
