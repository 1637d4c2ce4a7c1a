-- Semantic cache tier: one table for every embedder, one HNSW index per embedding dimension.
--
-- The embedding column has no fixed dimension, so embedders of any size share the table; pgvector
-- can only index a fixed dimension, so each supported dimension gets a partial expression index
-- (pgvector's documented pattern for mixed dimensions). A query uses the index when it filters on
-- `dims` and orders by the same cast, e.g. for a 768-dimension embedder:
--   WHERE dims = 768 AND tenant = $1 AND model = $2 AND embed_model = $3
--   ORDER BY embedding::vector(768) <=> $4::vector(768) LIMIT $5
-- Supporting another dimension is a new migration: add its index and widen the CHECK below.

CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE semantic_cache (
    id           bigserial   PRIMARY KEY,
    -- Namespace: answers are only ever looked up within one (tenant, model).
    tenant       text        NOT NULL,
    model        text        NOT NULL,
    -- Hash of the canonical request (the exact tier's key); one entry per request per namespace.
    exact_key    text        NOT NULL,
    prompt_text  text        NOT NULL,
    -- The embedding model that produced `embedding`: vectors of different embedders never compare.
    embed_model  text        NOT NULL,
    embedding    vector      NOT NULL,
    dims         integer     GENERATED ALWAYS AS (vector_dims(embedding)) STORED,
    -- The cached answer, serialised by the cache service.
    payload      bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- NULL means the entry never expires.
    expires_at   timestamptz,
    hits         integer     NOT NULL DEFAULT 0,
    last_hit_at  timestamptz,
    CONSTRAINT semantic_cache_tenant_nonempty CHECK (tenant <> ''),
    CONSTRAINT semantic_cache_model_nonempty CHECK (model <> ''),
    -- 384: all-MiniLM-L6-v2 and friends; 768: nomic-embed-text.
    CONSTRAINT semantic_cache_dims_indexed CHECK (dims IN (384, 768))
);

-- Also serves lookups by (tenant, model): its leading columns make a separate index redundant.
CREATE UNIQUE INDEX semantic_cache_namespace_key ON semantic_cache (tenant, model, exact_key);

-- Expiry sweeps: DELETE ... WHERE expires_at < now().
CREATE INDEX semantic_cache_expires_at ON semantic_cache (expires_at);

CREATE INDEX semantic_cache_hnsw_384 ON semantic_cache
    USING hnsw ((embedding::vector(384)) vector_cosine_ops) WHERE dims = 384;

CREATE INDEX semantic_cache_hnsw_768 ON semantic_cache
    USING hnsw ((embedding::vector(768)) vector_cosine_ops) WHERE dims = 768;
