CREATE TABLE IF NOT EXISTS "sessions" (id BLOB PRIMARY KEY, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, sweep_at INTEGER NOT NULL, owner BLOB, forward_to BLOB) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_owner ON "sessions" (owner) WHERE owner IS NOT NULL;
CREATE INDEX IF NOT EXISTS sessions_sweep ON "sessions" (sweep_at);
CREATE TABLE IF NOT EXISTS "sessions_data" (session_id BLOB NOT NULL REFERENCES "sessions" (id) ON DELETE CASCADE, name_hash BLOB NOT NULL, name BLOB NOT NULL, value BLOB NOT NULL, PRIMARY KEY (session_id, name_hash)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS "sessions_schema" (version INTEGER NOT NULL);
