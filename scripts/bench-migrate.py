#!/usr/bin/env python3
"""Benchmarks of the migration phase on PostgreSQL, with Alembic measured in the same run.

Figures:
  1. time to apply 200 small migrations, one transaction each and --single-transaction;
  2. the no-op time, when the database is already current (median of 10 runs);
  3. wall time for 20 concurrent migrators against one, on a fresh database;
  4. an Alembic project of the same 200 revisions, database current: the no-op start of
     `preflight run -- true` with the Alembic source (read natively, no Python), with the
     check-command way (`alembic current --check-heads` before `alembic upgrade head`), and bare
     `alembic upgrade head`; and 5 replicas starting at once against one, each way, with the CPU
     floor of five logins on this machine.

The Alembic project is shaped like the seeds': Alembic's own revision template with an
autogenerate-sized body, and an env.py that imports the app's 20 ORM models.

Alembic (target/test-venv, installed by scripts/install-test-deps.sh) applies the same 200
statements as 200 revisions. Each timing is a whole process run, start to exit, on a fresh
database of a server started here (fsync off). Run as root.

Usage: scripts/bench-migrate.py [--count 200]
"""

import argparse
import atexit
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import BIN, ROOT, Postgres, build_release  # noqa: E402

ALEMBIC = os.path.join(ROOT, "target", "test-venv", "bin", "alembic")


def statement(i):
    return f"CREATE TABLE t{i} (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t{i} VALUES (1, 'x');"


def sql_dir(count):
    d = tempfile.mkdtemp(prefix="pf-bench-sql-")
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    for i in range(1, count + 1):
        with open(os.path.join(d, f"{i:05d}_t{i}.sql"), "w") as f:
            f.write(statement(i) + "\n")
    return d


def alembic_dir(count):
    d = tempfile.mkdtemp(prefix="pf-bench-alembic-")
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    os.mkdir(os.path.join(d, "versions"))
    with open(os.path.join(d, "alembic.ini"), "w") as f:
        f.write("[alembic]\nscript_location = %(here)s\n")
    # The seeds' env.py files import the app's models for autogenerate (target_metadata);
    # so does this one, with 20 ORM models, which is what a Python start costs them.
    with open(os.path.join(d, "models.py"), "w") as f:
        f.write(models_file(20))
    with open(os.path.join(d, "env.py"), "w") as f:
        f.write(
            "import os\nimport sys\nfrom alembic import context\nfrom sqlalchemy import create_engine\n"
            "sys.path.insert(0, os.path.dirname(__file__))\nfrom models import Base\n"
            "target_metadata = Base.metadata\n"
            "url = os.environ['DATABASE_URL'].replace('postgres://', 'postgresql+psycopg2://', 1)\n"
            "with create_engine(url).connect() as c:\n"
            "    context.configure(connection=c, target_metadata=target_metadata)\n"
            "    with context.begin_transaction():\n"
            "        context.run_migrations()\n")
    for i in range(1, count + 1):
        with open(os.path.join(d, "versions", f"{i:05d}_t{i}.py"), "w") as f:
            f.write(revision_file(i))
    return d


def models_file(count):
    """An app's models.py in SQLAlchemy 2's declarative style."""
    out = ["from datetime import datetime\n\nfrom sqlalchemy import ForeignKey, String\n"
           "from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship\n\n\n"
           "class Base(DeclarativeBase):\n    pass\n"]
    for i in range(count):
        parent = f'    parent_id: Mapped[int] = mapped_column(ForeignKey("m{i - 1}.id"))\n' \
                 f'    parent: Mapped["M{i - 1}"] = relationship()\n' if i else ""
        out.append(f'\n\nclass M{i}(Base):\n    __tablename__ = "m{i}"\n'
                   "    id: Mapped[int] = mapped_column(primary_key=True)\n"
                   "    name: Mapped[str] = mapped_column(String(200), index=True)\n"
                   "    created: Mapped[datetime]\n" + parent)
    return "".join(out)


def revision_file(i):
    """A revision in the shape of Alembic's own template (`alembic revision`), with a body of the
    size autogenerate writes (~2.5 KB), so that reading 200 of them costs what it costs users."""
    down = f"'{i - 1:05d}'" if i > 1 else "None"
    body = "".join(
        f"    # op.add_column('t{i}', sa.Column('c{j}', sa.String(length=200), nullable=True))\n"
        for j in range(20))
    return (f'"""create table t{i}\n\nRevision ID: {i:05d}\nRevises: {down.strip(chr(39))}\n'
            f'Create Date: 2026-01-01 00:00:00.000000\n\n"""\n'
            "from typing import Sequence, Union\n\nfrom alembic import op\nimport sqlalchemy as sa\n\n\n"
            "# revision identifiers, used by Alembic.\n"
            f"revision: str = '{i:05d}'\n"
            f"down_revision: Union[str, Sequence[str], None] = {down}\n"
            "branch_labels: Union[str, Sequence[str], None] = None\n"
            "depends_on: Union[str, Sequence[str], None] = None\n\n\n"
            "def upgrade() -> None:\n"
            '    """Upgrade schema."""\n'
            f'    op.execute("{statement(i)}")\n{body}\n\n'
            "def downgrade() -> None:\n"
            '    """Downgrade schema."""\n'
            f"    op.drop_table('t{i}')\n{body}")


def cpu_seconds(server_pid):
    """CPU used so far by this script's finished children and by the server with its finished
    backends (a backend is one login)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(f"/proc/{server_pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime, stime, cutime, cstime are fields 14-17 of stat; [0] here is field 3.
    ticks = sum(int(x) for x in fields[11:15])
    return r.ru_utime + r.ru_stime + ticks / os.sysconf("SC_CLK_TCK")


def children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return f.read().split()


def backends_gone(server_pid, helpers, limit=5.0):
    """Waits until the server has reaped the backends of the last logins, so that their CPU
    is counted in its children's time."""
    end = time.monotonic() + limit
    while len(children(server_pid)) > helpers:
        if time.monotonic() > end:
            raise RuntimeError("the server's backends did not exit")
        time.sleep(0.001)


def timed(args, env=None):
    t = time.perf_counter()
    out = subprocess.run(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    took = time.perf_counter() - t
    if out.returncode != 0:
        raise RuntimeError(f"{args[0]} exited {out.returncode}:\n{out.stderr[-2000:]}")
    return took


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=200)
    args = ap.parse_args()
    if not os.path.exists(ALEMBIC):
        sys.exit("bench-migrate: run scripts/install-test-deps.sh first (it installs Alembic)")
    build_release()
    n = args.count
    migrations = sql_dir(n)
    alembic = alembic_dir(n)
    pg = Postgres()
    pg.start()
    pg.ready_time()
    try:
        def preflight(url, *extra):
            return timed([BIN, "migrate", "--database-url", url, "--migrations", migrations, *extra])

        def alembic_upgrade(url):
            env = dict(os.environ, DATABASE_URL=url, PYTHONDONTWRITEBYTECODE="1")
            return timed([ALEMBIC, "-c", os.path.join(alembic, "alembic.ini"), "upgrade", "head"], env)

        print(f"== 1. apply {n} small migrations to a fresh database")
        per = preflight(pg.create_db("per_migration"))
        single = preflight(pg.create_db("single_tx"), "--single-transaction")
        alem = alembic_upgrade(pg.create_db("alembic"))
        print(f"  preflight, one transaction each: {per:6.3f} s ({per / n * 1000:.2f} ms per migration)")
        print(f"  preflight, --single-transaction: {single:6.3f} s ({per / single:.1f}x faster than one each)")
        print(f"  alembic upgrade head:            {alem:6.3f} s ({alem / per:.1f}x preflight's time)")

        print("== 2. no-op run, database current (median of 10)")
        url = pg.url(db="per_migration")
        noop = statistics.median(preflight(url) for _ in range(10))
        alem_noop = statistics.median(alembic_upgrade(pg.url(db="alembic")) for _ in range(10))
        print(f"  preflight: {noop * 1000:6.1f} ms   alembic: {alem_noop * 1000:6.1f} ms "
              f"({alem_noop / noop:.0f}x preflight's time)")

        print("== 3. 20 concurrent migrators against one, fresh databases")
        one = preflight(pg.create_db("one"))
        crowd_url = pg.create_db("crowd")
        t = time.perf_counter()
        procs = [subprocess.Popen([BIN, "migrate", "--database-url", crowd_url, "--migrations", migrations],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(20)]
        codes = [p.wait() for p in procs]
        crowd = time.perf_counter() - t
        assert codes == [0] * 20, codes
        print(f"  one: {one:6.3f} s   twenty: {crowd:6.3f} s ({crowd / one:.2f}x), all exited 0")
        print(f"== 4. Alembic project of {n} revisions, database current: no-op start (median of 20)")
        ini = os.path.join(alembic, "alembic.ini")
        alembic_url = pg.url(db="alembic")
        env = dict(os.environ, PATH=os.path.dirname(ALEMBIC) + ":" + os.environ["PATH"],
                   PYTHONDONTWRITEBYTECODE="1")
        ways = {
            "preflight, Alembic source": [BIN, "run", "--database-url", alembic_url, "--alembic-config", ini,
                                          "--", "true"],
            "preflight, check command": [BIN, "run", "--database-url", alembic_url,
                                         "--migrate-command", f"alembic -c {ini} upgrade head",
                                         "--schema-check-command", f"alembic -c {ini} current --check-heads",
                                         "--", "true"],
        }
        alone = {}
        for name, argv in ways.items():
            alone[name] = statistics.median(timed(argv, env) for _ in range(20))
        bare = statistics.median(alembic_upgrade(alembic_url) for _ in range(20))
        native = alone["preflight, Alembic source"]
        for name, t in alone.items():
            print(f"  {name:28} {t * 1000:7.1f} ms ({bare / t:5.1f}x faster than bare alembic)")
        print(f"  {'alembic upgrade head':28} {bare * 1000:7.1f} ms")
        print(f"  goal: Alembic source <= 15 ms and >= 40x faster: "
              f"{'met' if native <= 0.015 and bare / native >= 40 else 'NOT met'}")

        print("== 5. 5 replicas starting at once on a current schema (median of 5 rounds)")
        # Five logins and five process starts on one machine cost CPU, whatever the tool: the
        # floor is the CPU the five runs use (theirs and the server's) spread over the cores.
        # `preflight wait` (log in, nothing else) is measured alongside as the peer floor.
        helpers = len(children(pg.proc.pid))  # checkpointer, walwriter…: not logins
        ways["preflight wait (login only)"] = [BIN, "wait", "--database-url", alembic_url]
        alone["preflight wait (login only)"] = statistics.median(
            timed(ways["preflight wait (login only)"], env) for _ in range(20))
        cores = os.cpu_count()
        for name, argv in ways.items():
            rounds = []
            before = cpu_seconds(pg.proc.pid)
            for _ in range(5):
                t = time.perf_counter()
                procs = [subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                         for _ in range(5)]
                codes = [p.wait() for p in procs]
                rounds.append(time.perf_counter() - t)
                assert codes == [0] * 5, codes
                backends_gone(pg.proc.pid, helpers)
            # CPU is read in clock ticks: over all rounds, not per round.
            floor = (cpu_seconds(pg.proc.pid) - before) / 5 / cores
            five = statistics.median(rounds)
            print(f"  {name:28} one {alone[name] * 1000:7.1f} ms, five {five * 1000:7.1f} ms "
                  f"({five / alone[name]:.2f}x one; CPU floor on {cores} cores {floor * 1000:.1f} ms, "
                  f"{five / floor:.2f}x it)")
    finally:
        pg.cleanup()


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("bench-migrate: run as root (PostgreSQL runs as the postgres user)")
    main()
