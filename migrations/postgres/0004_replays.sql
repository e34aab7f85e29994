-- Replays: the first answer to a request that may come again, a webhook delivery
-- (`X-Attune-Delivery`) or `POST /events` with an `Idempotency-Key`. A repeat answers from here
-- and stores nothing more. Written in the transaction of the events it answers for; the primary
-- key decides between two requests with one key. Kept at least 24 h, then pruned in small
-- batches by later writes. Keep in step with ../sqlite/0004_replays.sql.
CREATE TABLE replays (
    scope         TEXT NOT NULL,     -- `webhook:<trigger ref>` or `token:<token id>`
    key           TEXT NOT NULL,     -- the delivery id or idempotency key
    request_hash  TEXT NOT NULL,     -- hex SHA-256 of the request body
    status        INTEGER NOT NULL,  -- the HTTP status answered
    body          TEXT NOT NULL,     -- the response body answered
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX replays_by_time ON replays (created_at);
