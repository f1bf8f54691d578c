-- Catalogue listings (projection "catalogue"): one row per graph node, listed or not, so a listing that stops
-- qualifying keeps its row and comes back when the cause is undone. id = derived_id('listing', node_id), stable
-- across rebuilds (orders name it). Fields of non-capability nodes are kept too (nullable, read leniently):
-- a node revised into a capability without a data change carries no data in its event.
CREATE TABLE IF NOT EXISTS catalogue_listings (
    id                  uuid PRIMARY KEY,
    node_id             uuid        NOT NULL,
    machine_id          uuid        NOT NULL,
    account_id          uuid        NOT NULL,
    node_type           text        NOT NULL,
    node_status         text        NOT NULL,
    capability          text,
    provider_key        text,
    price_amount        bigint,
    price_currency      text,
    input_schema        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- Copies of this projection's machine and endpoint state, refreshed whenever either changes.
    machine_operational boolean     NOT NULL DEFAULT false,
    endpoint_active     boolean     NOT NULL DEFAULT false,
    listed              boolean     GENERATED ALWAYS AS (
        node_type = 'capability' AND node_status = 'active' AND machine_operational AND endpoint_active
        AND capability IS NOT NULL AND provider_key IS NOT NULL AND price_amount IS NOT NULL
        AND price_currency IS NOT NULL
    ) STORED,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL
);

-- Discovery: listed rows of one capability, cheapest first.
CREATE INDEX IF NOT EXISTS catalogue_listings_discover_idx
    ON catalogue_listings (capability, price_amount, id) WHERE listed;
-- GET /v1/catalogue pages by id, optionally within one capability.
CREATE INDEX IF NOT EXISTS catalogue_listings_page_idx ON catalogue_listings (id) WHERE listed;
CREATE INDEX IF NOT EXISTS catalogue_listings_capability_page_idx
    ON catalogue_listings (capability, id) WHERE listed;
-- The projection's flag refresh (per machine and provider key) and the seller filter.
CREATE INDEX IF NOT EXISTS catalogue_listings_machine_idx ON catalogue_listings (machine_id, provider_key);
