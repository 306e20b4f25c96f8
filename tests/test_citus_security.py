"""Least privilege on the distributed setup: the role tests of tests/test_security.py again.

Each pushpop role may call exactly its functions, no role reads or writes a table, the callers'
search_path changes nothing, the producer, consumer, admin and worker flows of the Python
clients work as on one server, and a second database reuses the pushpop roles; the LOGIN roles
are made on the coordinator and every database is a distributed one (tests/test_citus_clients.py's
fixtures).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
import test_security
from citus import CitusCluster
from roles import Logins, made
from test_citus_clients import collect, distributed_template, dsn

# What a distributed installation does differently, or what a test needs that only one server
# has; one line each.
DIFFERENT = {
    # Citus propagates each pushpop role to the workers at its first GRANT in a database, with
    # ALTER ROLE ... NOSUPERUSER, which only a superuser may run: the installing owner needs one.
    "test_an_owner_without_createrole_installs_pushpop_once_the_roles_exist",
}

_databases = itertools.count()

catalog = test_security.catalog
__all__ = ["catalog", "distributed_template", "dsn"]

globals().update(collect(test_security, different=DIFFERENT))


@pytest.fixture(scope="module")
def logins(citus_cluster: CitusCluster, distributed_template: str) -> Iterator[Logins]:
    """The LOGIN roles of test_security.py, made on the coordinator, where clients log in
    (overrides that module's, which makes them on the single server)."""
    kinds = {kind: [role] for kind, role in test_security.KINDS.items()} | {"nobody": []}
    with made(citus_cluster.coordinator.dsn(), kinds) as logins:
        yield logins


@pytest.fixture
def empty_dsn(citus_cluster: CitusCluster) -> Iterator[str]:
    """A database on the coordinator with Citus and its workers but no pushpop, for the tests
    that install pushpop a second time (overrides conftest's, on the single server)."""
    dbname = f"citus_security_empty_{next(_databases)}"
    yield citus_cluster.create_database(dbname)
    citus_cluster.drop_database(dbname)
