"""The semantic tier's nearest-neighbour statement, in a database of its own on the session's PostgreSQL.

A database of its own: the plan depends on the table's statistics, which the other tests' entries
(many tenants, few rows each) would change.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from pgvector.psycopg import register_vector_async

from devstack import migrate
from devstack.postgres import PostgresServer
from services.cache.embedders import HashingEmbedder
from services.cache.semantic_store import MIGRATIONS_DIR, Namespace, SemanticStore

EMBEDDER = HashingEmbedder(384)
ROWS = 3000


@pytest.fixture
def own_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    """A new, migrated database, dropped afterwards."""
    name = f"plan_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.dsn_for("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        migrate.apply(postgres_server.dsn_for(name), MIGRATIONS_DIR)
        yield postgres_server.dsn_for(name)
    finally:
        with psycopg.connect(postgres_server.dsn_for("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def numbered(sql: str) -> str:
    """The statement with psycopg's named placeholders as $1, $2 … (one number per name)."""
    names: dict[str, str] = {}
    return re.sub(r"%\((\w+)\)s", lambda m: names.setdefault(m.group(1), f"${len(names) + 1}"), sql)


async def test_a_small_table_is_searched_through_the_hnsw_index_under_a_generic_plan(
    own_dsn: str, tenant: str
) -> None:
    store = SemanticStore(own_dsn, 384, 1, 40, 5)
    await store.open()
    try:
        ns = Namespace(tenant, "llama3.2:1b", EMBEDDER.name, "ctx")
        now = datetime.now(UTC)
        texts = [f"How do I configure service number {n} with Docker?" for n in range(ROWS)]
        async with await psycopg.AsyncConnection.connect(own_dsn, autocommit=True) as conn:
            await register_vector_async(conn)
            async with (
                conn.cursor() as cursor,
                cursor.copy(
                    "COPY semantic_cache (tenant, model, exact_key, context_key, prompt_text, embed_model,"
                    " embedding, payload, created_at, expires_at) FROM STDIN WITH (FORMAT BINARY)"
                ) as copy,
            ):
                copy.set_types(["text"] * 6 + ["vector", "bytea", "timestamptz", "timestamptz"])
                for n, text in enumerate(texts):
                    keys = (tenant, ns.model, f"{n:064x}", ns.context_key, text, ns.embed_model)
                    await copy.write_row((*keys, EMBEDDER.vector(text), b"a", now, now + timedelta(hours=1)))
            await conn.execute("ANALYZE semantic_cache")
            explain = "EXPLAIN (GENERIC_PLAN, FORMAT JSON) " + numbered(store.nearest_sql(4))
            row = await (await conn.execute(explain)).fetchone()
        assert row is not None
        plan = json.dumps(row[0])
        # NOTE: the plan every lookup runs (plan_cache_mode = force_generic_plan). With the LIMIT as
        # a parameter it was a sequential scan computing the distance to every row of the table.
        assert "semantic_cache_hnsw_384" in plan and "Seq Scan" not in plan

        query = "how can i configure service number 17 with Docker"
        found = await store.nearest(ns, EMBEDDER.vector(query), 4, None, 5)
        assert len(found) == 4 and found[0].prompt_text == texts[17]
        assert [c.similarity for c in found] == sorted((c.similarity for c in found), reverse=True)
        assert {c.prompt_text for c in found} <= set(texts)
    finally:
        await store.close()
