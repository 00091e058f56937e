"""psycopg 3 through pgmux, its queries sent as the unnamed statement (prepare=False, what it
sends for a query run fewer than prepare_threshold times), while a migration is made straight on
PostgreSQL: every run returns the table's rows as they are now, with no error, as on a direct
connection. Inside a transaction block (psycopg's default, autocommit off) the same holds when
the query is the block's first statement; where more ran in the block before it, the first run
after a migration is refused once (the refusal aborted what ran; docs/COMPATIBILITY.md), and the
next block works.

usage: psycopg_ddl_behind.py MUX_DSN DIRECT_DSN TABLE
"""

import sys

import psycopg

mux_dsn, direct_dsn, table = sys.argv[1:4]
QUERY = f"SELECT * FROM {table} WHERE a = %s"


def rows(conn):
    # '1' goes as a string of unknown type: PostgreSQL types it from the column.
    return conn.execute(QUERY, ("1",), prepare=False).fetchall()


with psycopg.connect(direct_dsn, autocommit=True) as direct, psycopg.connect(mux_dsn, autocommit=True) as mux:
    for sql in (f"DROP TABLE IF EXISTS {table}", f"CREATE TABLE {table} (a int)",
                f"INSERT INTO {table} VALUES (1)", f"GRANT ALL ON {table} TO PUBLIC"):
        direct.execute(sql)
    for _ in range(3):
        assert rows(mux) == [(1,)], rows(mux)
    migrations = [
        ("ADD COLUMN b int DEFAULT 7", [(1, 7)]),
        # `a = $1` was typed int at the first Parse: the old statement now fails with 42883.
        ("ALTER COLUMN a TYPE text", [("1", 7)]),
        ("DROP COLUMN b", [("1",)]),
        ("ALTER COLUMN a TYPE bigint USING a::bigint", [(1,)]),
    ]
    runs = 0
    for alter, want in migrations:
        direct.execute(f"ALTER TABLE {table} {alter}")
        for _ in range(3):
            got = rows(mux)
            assert got == want, f"after {alter}: {got} != {want}"
            runs += 1
    pipelined = 0
    # In a pipeline of one query (Parse, Bind, Describe, Execute, Sync, then a Flush behind
    # the Sync): sent again too.
    for alter, want in [("ADD COLUMN p int DEFAULT 5", [(1, 5)]), ("DROP COLUMN p", [(1,)])]:
        direct.execute(f"ALTER TABLE {table} {alter}")
        with mux.pipeline():
            cur = mux.execute(QUERY, ("1",), prepare=False)
        got = cur.fetchall()
        assert got == want, f"pipelined, after {alter}: {got} != {want}"
        pipelined += 1
    # Inside a transaction block, the query first in it: no error, and the block is the
    # client's (its isolation level, still open after the query).
    mux.autocommit = False
    mux.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    blocks = 0
    for alter, want in [("ADD COLUMN c int DEFAULT 3", [(1, 3)]), ("ALTER COLUMN a TYPE text", [("1", 3)])]:
        direct.execute(f"ALTER TABLE {table} {alter}")
        with mux.transaction():
            got = rows(mux)
            assert got == want, f"in a block after {alter}: {got} != {want}"
            level = mux.execute("SHOW transaction_isolation").fetchone()[0]
            assert level == "repeatable read", level
            blocks += 1
    # More ran in the block first: at most one refusal, then the next block works.
    direct.execute(f"ALTER TABLE {table} ADD COLUMN d int DEFAULT 4")
    refused = 0
    for _ in range(2):
        try:
            with mux.transaction():
                mux.execute("SELECT 1")
                got = rows(mux)
                assert got == [("1", 3, 4)], got
        except psycopg.errors.FeatureNotSupported:
            refused += 1
    assert refused <= 1, refused
    with mux.transaction():
        assert rows(mux) == [("1", 3, 4)]
    print(f"ok psycopg: {runs} runs across {len(migrations)} migrations, no error; {pipelined} pipelines, no error; "
          f"{blocks} blocks, no error; {refused} refusal in a block where more ran")
