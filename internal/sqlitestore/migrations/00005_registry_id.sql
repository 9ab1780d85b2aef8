-- +goose Up
-- The registry's own id (adopted = 0, one row), random, made with the schema, and the ids of
-- the registries whose sandboxes it took over (adopted = 1; '' stands for sandboxes whose
-- labels name no registry). Every sandbox carries the id of the registry that made it as a
-- label, so that a registry only ever removes sandboxes it made or adopted
-- (lifecycle.Binding).
CREATE TABLE registry_ids (
    registry_id TEXT    NOT NULL PRIMARY KEY,
    adopted     INTEGER NOT NULL CHECK (adopted IN (0, 1)),
    since       INTEGER NOT NULL -- unix microseconds
) STRICT;
CREATE UNIQUE INDEX registry_ids_own ON registry_ids (adopted) WHERE adopted = 0;
-- A random (version 4) UUID.
INSERT INTO registry_ids (registry_id, adopted, since) VALUES (
    lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' ||
    substr(lower(hex(randomblob(2))), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) ||
    substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6))),
    0, CAST(strftime('%s', 'now') AS INTEGER) * 1000000);

-- +goose Down
DROP TABLE registry_ids;
