-- The fleet registry: every health replica loads it at start and follows it through LISTEN/NOTIFY.
--
-- One row per node (its address, labels and drain state). `fleet_registry_seed` holds one row once
-- the registry has been seeded from a health configuration, so that the configured node list seeds
-- an empty registry once and never re-adds nodes removed at run time.

CREATE TABLE fleet_nodes (
    node_id    text        PRIMARY KEY,
    address    text        NOT NULL UNIQUE,
    labels     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    draining   boolean     NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE fleet_registry_seed (
    id        integer     PRIMARY KEY CHECK (id = 1),
    seeded_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION fleet_nodes_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('corral_fleet', COALESCE(NEW.node_id, OLD.node_id));
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER fleet_nodes_changed
    AFTER INSERT OR UPDATE OR DELETE ON fleet_nodes
    FOR EACH ROW EXECUTE FUNCTION fleet_nodes_notify();
