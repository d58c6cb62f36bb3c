-- Idempotency keys (server/idempotency.rs): one row per (caller, method,
-- key). A request claims its key by inserting the row (in_progress); the
-- response it produced is stored with it (done). A retry with the same input
-- is answered from the row; one with another input is refused. 5xx responses
-- are not stored: the row is deleted and a retry executes anew.
CREATE TABLE idempotency_keys (
    caller text NOT NULL,
    method text NOT NULL,
    key text NOT NULL,
    -- SHA-256 of the request body with object keys sorted: "the same input,
    -- compared by value".
    request_hash bytea NOT NULL,
    state text NOT NULL CHECK (state IN ('in_progress', 'done')),
    -- Random per claim: only the request holding it may store the response
    -- or give the claim up, even after a retry took an expired lease over.
    claim bytea NOT NULL,
    -- While in_progress: after this, the claiming process is presumed dead
    -- and a retry with the same input may take the key over.
    lease_until timestamptz NOT NULL,
    status smallint,
    content_type text,
    body bytea,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (caller, method, key),
    CHECK (state = 'in_progress' OR (status IS NOT NULL AND body IS NOT NULL))
);

CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at);

-- Security-relevant events (server/audit.rs): who, what, when, which
-- conversation. Never message payloads or key material.
CREATE TABLE audit_events (
    id bigserial PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    kind text NOT NULL CHECK (kind IN (
        'auth_failed',
        'commit_rejected',
        'external_commit_accepted',
        'external_commit_rejected',
        'member_removed',
        'member_banned',
        'group_info_fetched'
    )),
    -- The authenticated caller's DID. For auth_failed: the issuer the token
    -- claims, unverified, if it could be read at all.
    actor text,
    -- The XRPC method (NSID).
    method text NOT NULL,
    -- The client address the request came from.
    client_ip text,
    -- The conversation, hex-encoded group id, when there is one.
    convo_id text,
    -- The user acted upon (the removed or banned DID).
    subject text,
    -- For failures and rejections: the error name and message.
    reason text
);

CREATE INDEX audit_events_occurred_at ON audit_events (occurred_at);
CREATE INDEX audit_events_convo ON audit_events (convo_id, occurred_at) WHERE convo_id IS NOT NULL;

-- The external-commit rollout switch: one row, changed at run time with
-- `catbird-mls external-commits` and read per request, so every service
-- process follows it without a restart.
CREATE TABLE external_commit_rollout (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    enabled boolean NOT NULL,
    -- Share of users, by a stable hash of their DID, that may use external
    -- commits (0..=100).
    percent smallint NOT NULL CHECK (percent BETWEEN 0 AND 100),
    -- DIDs that may always use them (while enabled).
    allow_list text[] NOT NULL DEFAULT '{}',
    updated_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO external_commit_rollout (enabled, percent) VALUES (true, 100);
