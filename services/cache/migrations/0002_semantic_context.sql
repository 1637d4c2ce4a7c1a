-- Semantic tier namespace: the hash of everything in a request except its question.
--
-- Two requests only compare semantically when their context matches exactly: the system prompt,
-- the earlier turns of a chat, the output format, the output-changing options, tools and images.
-- The same question asked in two different conversations, or with two different system prompts,
-- is a different request (services/cache/keys.py derives the hash).

ALTER TABLE semantic_cache ADD COLUMN context_key text NOT NULL DEFAULT '';
