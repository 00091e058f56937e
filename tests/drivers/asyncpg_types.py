"""asyncpg through pgmux with its statement cache (named statements, prepared once per
connection, whose result columns asyncpg keeps and decodes rows with) across column type changes
made through pgmux and straight on PostgreSQL: every value comes back as the column's type now.
asyncpg prepares again after PostgreSQL refuses its old statement (outside a transaction block);
pgmux must never hand it a statement of another shape under the old name (session 21: an int
column changed to text came back as 825241648). Then the same with its caches off
(statement_cache_size=0, what its docs advise behind a transaction-mode pooler): it prepares the
unnamed statement in a batch of its own (Parse, Describe, Flush), which pgmux serves from its
cache of unnamed statements; after DDL made straight on PostgreSQL that batch, refused, is sent
again, so no step gets an error, as on a direct connection.

usage: asyncpg_types.py MUX_DSN DIRECT_DSN TABLE
"""

import asyncio
import sys
from decimal import Decimal

import asyncpg


async def main(mux_dsn, direct_dsn, table):
    direct = await asyncpg.connect(direct_dsn)
    await direct.execute(
        f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (a int); INSERT INTO {table} VALUES (1000); "
        f"GRANT ALL ON {table} TO PUBLIC"
    )
    mux = await asyncpg.connect(mux_dsn)
    other = await asyncpg.connect(mux_dsn)
    query = f"SELECT a FROM {table}"
    for _ in range(3):
        assert await mux.fetchval(query) == 1000
    steps = [
        (other, "ALTER COLUMN a TYPE text", "1000"),
        (direct, "ALTER COLUMN a TYPE bigint USING a::bigint", 1000),
        (other, "ALTER COLUMN a TYPE numeric", Decimal(1000)),
        (direct, "ALTER COLUMN a TYPE text", "1000"),
    ]
    for who, alter, want in steps:
        await who.execute(f"ALTER TABLE {table} {alter}")
        for _ in range(3):
            got = await mux.fetchval(query)
            assert got == want and type(got) is type(want), f"after {alter}: {got!r} != {want!r}"
    uncached = await asyncpg.connect(mux_dsn, statement_cache_size=0)
    param_query = f"SELECT a FROM {table} WHERE a::text = $1"
    for who, alter, want in steps:
        await who.execute(f"ALTER TABLE {table} {alter}")
        for _ in range(3):
            got = await uncached.fetchval(param_query, "1000")
            assert got == want and type(got) is type(want), f"uncached, after {alter}: {got!r} != {want!r}"
    for c in (mux, other, direct, uncached):
        await c.close()
    print(f"ok asyncpg: {len(steps)} type changes, every value as its column's type, cached or not")


asyncio.run(main(*sys.argv[1:4]))
