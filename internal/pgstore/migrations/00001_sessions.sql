-- +goose Up
-- One row per sandbox session. UNIQUE (chat_id) is the fence for one session per chat:
-- whatever the per-chat advisory locks do (a holder whose connection died may still be
-- running), the database refuses a second session for a chat.
CREATE TABLE sandbox_sessions (
    session_id       uuid        NOT NULL PRIMARY KEY,
    chat_id          uuid        NOT NULL,
    container_id     text        NOT NULL,
    status           text        NOT NULL,
    created_at       timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    agent_id         text        NOT NULL DEFAULT '',
    volume_host_path text        NOT NULL DEFAULT '',
    CONSTRAINT sandbox_sessions_one_per_chat UNIQUE (chat_id)
);

-- The sweep reads expired sessions oldest first, in batches.
CREATE INDEX sandbox_sessions_expires_at ON sandbox_sessions (expires_at, chat_id);
-- The API lists one agent's sessions in chat order.
CREATE INDEX sandbox_sessions_agent_id ON sandbox_sessions (agent_id, chat_id);

-- +goose Down
DROP TABLE sandbox_sessions;
