-- +goose Up
-- The runtime whose sandboxes the registry records (lifecycle.Binding): one row at most.
CREATE TABLE runtime_binding (
    singleton  INTEGER NOT NULL PRIMARY KEY CHECK (singleton = 1),
    identity   TEXT    NOT NULL,
    bound_at   INTEGER NOT NULL -- unix microseconds
);

-- +goose Down
DROP TABLE runtime_binding;
