-- +goose Up
-- One row per sandbox session. UNIQUE (chat_id) is the fence for one session per chat:
-- whatever the locks do, the database refuses a second session for a chat.
-- Times are microseconds since the Unix epoch (UTC): they sort and compare as integers.
CREATE TABLE sandbox_sessions (
    session_id       TEXT    NOT NULL PRIMARY KEY,
    chat_id          TEXT    NOT NULL UNIQUE,
    container_id     TEXT    NOT NULL,
    status           TEXT    NOT NULL,
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    agent_id         TEXT    NOT NULL DEFAULT '',
    volume_host_path TEXT    NOT NULL DEFAULT ''
) STRICT;

-- The sweep reads expired sessions oldest first, in batches.
CREATE INDEX sandbox_sessions_expires_at ON sandbox_sessions (expires_at, chat_id);
-- The API lists one agent's sessions in chat order.
CREATE INDEX sandbox_sessions_agent_id ON sandbox_sessions (agent_id, chat_id);

-- +goose Down
DROP TABLE sandbox_sessions;
