-- +goose Up
-- The tenant whose caller created the session: only its callers reach it. Sessions
-- recorded before tenants existed belong to the default tenant.
ALTER TABLE sandbox_sessions ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';

-- A tenant's list (ordered by chat id) and its count of sessions read this index.
CREATE INDEX sandbox_sessions_tenant ON sandbox_sessions (tenant, chat_id);

-- +goose Down
DROP INDEX sandbox_sessions_tenant;
ALTER TABLE sandbox_sessions DROP COLUMN tenant;
