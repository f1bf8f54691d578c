-- Every delivery attempt, as made (status code or error class, duration): GET .../deliveries shows them.
CREATE TABLE IF NOT EXISTS webhook_delivery_attempts (
    delivery_id  uuid        NOT NULL,
    attempt      integer     NOT NULL,
    at           timestamptz NOT NULL,
    status_code  integer,
    error_class  text,
    error        text,
    duration_ms  integer     NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
