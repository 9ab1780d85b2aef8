-- +goose Up
-- The runtime whose sandboxes the registry records (lifecycle.Binding): one row at most,
-- shared by every replica.
CREATE TABLE runtime_binding (
    singleton  boolean     NOT NULL PRIMARY KEY DEFAULT true CHECK (singleton),
    identity   text        NOT NULL,
    bound_at   timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE runtime_binding;
