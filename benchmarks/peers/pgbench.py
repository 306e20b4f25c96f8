"""pgbench running the bare SQL from C: the ceiling of the server itself for this workload.

The same minimal table and statements as the psycopg peer, as pgbench custom scripts with
prepared statements, so no client language stands between the figures and the server.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from . import bare
from .common import Config, Peer

PGBENCH = Path("/usr/lib/postgresql/15/bin/pgbench")

PUSH = "INSERT INTO peer_queue (payload) VALUES (:payload);\n"
PUSH_MANY = "INSERT INTO peer_queue (payload) SELECT :payload FROM generate_series(1, {batch});\n"
_PICK = (
    "SELECT id FROM peer_queue WHERE taken_at IS NULL ORDER BY id LIMIT {n} FOR UPDATE SKIP LOCKED"
)
POP = (
    "UPDATE peer_queue SET taken_at = now() WHERE id = (" + _PICK.format(n=1) + ")"
    " RETURNING id \\gset\n"
    "DELETE FROM peer_queue WHERE id = :id;\n"
)
POP_MANY = (
    "WITH taken AS (UPDATE peer_queue SET taken_at = now() WHERE id = ANY(ARRAY("
    + _PICK.format(n="{batch}")
    + ")) RETURNING id) SELECT array_agg(id) AS ids FROM taken \\gset\n"
    "DELETE FROM peer_queue WHERE id = ANY(CAST(:ids AS bigint[]));\n"
)
TPS = re.compile(r"^tps = ([0-9.]+)", re.MULTILINE)


class Pgbench(Peer):
    """pgbench with custom scripts, one client per producer or consumer."""

    name = "pgbench"
    label = "pgbench ceiling, bare SQL"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.conninfo = ""

    def version(self) -> str:
        """``pgbench --version``."""
        out = subprocess.run([PGBENCH, "--version"], capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def notes(self) -> str:
        """The scripts and flags."""
        c = self.config
        return (
            f"`pgbench -n -M prepared -c {c.threads} -j {c.threads} -t N -f script` on the same "
            "table as the psycopg row; one script run is one transaction per statement "
            "(autocommit). push: `INSERT ... VALUES (:payload)`; batch: `INSERT ... SELECT "
            f":payload FROM generate_series(1, {c.batch})`. pop: the same `UPDATE ... SKIP "
            "LOCKED ... RETURNING id \\gset`, then `DELETE ... WHERE id = :id`; batch: the "
            f"`LIMIT {c.batch}` form returning `array_agg(id)`, then one `DELETE ... = ANY`. "
            "The rate is pgbench's tps (connection time excluded) times the messages per run."
        )

    def opened(self) -> contextlib.AbstractContextManager[None]:
        """A scratch database with the minimal table."""

        @contextlib.contextmanager
        def run() -> Iterator[None]:
            if not PGBENCH.exists():
                raise RuntimeError(f"{PGBENCH} is missing (Debian: postgresql-15)")
            with bare.table_database(self.config, "pgbench") as conninfo:
                self.conninfo = conninfo
                yield

        return run()

    def _run(self, script: str, per_script: int) -> float:
        """Runs the script until every message has moved; messages a second."""
        c = self.config
        with tempfile.NamedTemporaryFile("w", suffix=".sql", prefix="peers_") as f:
            f.write(script.format(batch=c.batch))
            f.flush()
            clients, runs = str(c.threads), str(c.per_thread // per_script)
            out = subprocess.run(
                [
                    *(PGBENCH, "-n", "-M", "prepared", "-c", clients, "-j", clients, "-t", runs),
                    *("-D", f"payload={c.text_payload}", "-f", f.name, self.conninfo),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
        match = TPS.search(out.stdout)
        if out.returncode != 0 or match is None:
            raise RuntimeError(f"pgbench failed: {out.stderr.strip() or out.stdout.strip()}")
        return float(match.group(1)) * per_script

    def push(self) -> float:
        """One INSERT per transaction."""
        bare.reset(self.conninfo)
        return self._checked(self._run(PUSH, 1), self.config.total)

    def push_batch(self) -> float:
        """A batch of rows per INSERT."""
        bare.reset(self.conninfo)
        return self._checked(self._run(PUSH_MANY, self.config.batch), self.config.total)

    def pop(self) -> float:
        """UPDATE ... SKIP LOCKED of one row, then its DELETE."""
        bare.reset(self.conninfo, self.config.total, self.config.text_payload)
        return self._checked(self._run(POP, 1), 0)

    def pop_batch(self) -> float:
        """The same, a batch of rows at a time."""
        bare.reset(self.conninfo, self.config.total, self.config.text_payload)
        return self._checked(self._run(POP_MANY, self.config.batch), 0)

    def _checked(self, rate: float, rows: int) -> float:
        if bare.left(self.conninfo) != rows:
            raise RuntimeError(f"pgbench left the table without the expected {rows} rows")
        return rate
