-- +goose Up
-- The registry's own id (NOT adopted, one row), random, made with the schema, and the ids
-- of the registries whose sandboxes it took over (adopted; '' stands for sandboxes whose
-- labels name no registry). Every sandbox carries the id of the registry that made it as a
-- label, so that a registry only ever removes sandboxes it made or adopted
-- (lifecycle.Binding). Shared by every replica.
CREATE TABLE registry_ids (
    registry_id text        NOT NULL PRIMARY KEY,
    adopted     boolean     NOT NULL,
    since       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX registry_ids_own ON registry_ids (adopted) WHERE NOT adopted;
INSERT INTO registry_ids (registry_id, adopted) VALUES (gen_random_uuid()::text, false);

-- +goose Down
DROP TABLE registry_ids;
