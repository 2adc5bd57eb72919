CREATE TABLE IF NOT EXISTS "sessions" (id BYTEA PRIMARY KEY, created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, sweep_at BIGINT NOT NULL, owner BYTEA, forward_to BYTEA);
CREATE INDEX IF NOT EXISTS sessions_owner ON "sessions" (owner) WHERE owner IS NOT NULL;
CREATE INDEX IF NOT EXISTS sessions_sweep ON "sessions" (sweep_at);
CREATE TABLE IF NOT EXISTS "sessions_data" (session_id BYTEA NOT NULL REFERENCES "sessions" (id) ON DELETE CASCADE, name_hash BYTEA NOT NULL, name BYTEA NOT NULL, value BYTEA NOT NULL, PRIMARY KEY (session_id, name_hash));
CREATE TABLE IF NOT EXISTS "sessions_schema" (version BIGINT NOT NULL);
