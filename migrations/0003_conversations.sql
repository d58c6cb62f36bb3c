-- Conversations: one MLS group each, followed by the service through its
-- public state. The row is the counter of the log (last_seq) and the epoch;
-- both change only in the transaction that appends to the log, with the row
-- locked, so seq is gapless and one commit per epoch wins.
CREATE TABLE convos (
    group_id bytea PRIMARY KEY,
    cipher_suite text NOT NULL,
    creator text NOT NULL,
    name text,
    description text,
    epoch bigint NOT NULL,
    last_seq bigint NOT NULL DEFAULT 0,
    -- The PublicGroup state (groups::engine), loaded per request.
    state bytea NOT NULL,
    -- The verified GroupInfo of the current epoch.
    group_info bytea NOT NULL,
    -- SHA-256 of the GroupInfo createConvo was called with: a repeat of the
    -- same call returns the conversation instead of ConvoAlreadyExists.
    created_with bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_message_at timestamptz
);

-- The users of a conversation, current and past.
CREATE TABLE convo_users (
    convo_id bytea NOT NULL REFERENCES convos ON DELETE CASCADE,
    did text NOT NULL,
    is_admin boolean NOT NULL DEFAULT false,
    -- The user's current membership began with this log entry (0: from the
    -- start); getMessages shows only what comes after it.
    visible_after_seq bigint NOT NULL DEFAULT 0,
    -- When the user's last device left; NULL while a current member.
    left_at timestamptz,
    banned_at timestamptz,
    PRIMARY KEY (convo_id, did)
);
CREATE INDEX convo_users_by_did ON convo_users (did, convo_id);

-- Member devices: one row per leaf a device held. Rows without left_at are
-- the current tree, kept equal to the PublicGroup's members after every
-- merge.
CREATE TABLE convo_devices (
    convo_id bytea NOT NULL REFERENCES convos ON DELETE CASCADE,
    device_id text NOT NULL,
    did text NOT NULL,
    leaf_index integer NOT NULL,
    joined_at timestamptz NOT NULL DEFAULT now(),
    left_at timestamptz
);
CREATE UNIQUE INDEX convo_devices_current_leaf ON convo_devices (convo_id, leaf_index)
    WHERE left_at IS NULL;
CREATE INDEX convo_devices_by_device ON convo_devices (device_id, convo_id);

-- The log.
CREATE TABLE convo_messages (
    convo_id bytea NOT NULL REFERENCES convos ON DELETE CASCADE,
    seq bigint NOT NULL,
    id text NOT NULL,
    -- The epoch the entry was sent in (for a commit: the epoch it ends).
    epoch bigint NOT NULL,
    kind text NOT NULL CHECK (kind IN ('application', 'commit', 'proposal')),
    payload bytea NOT NULL,
    payload_hash bytea NOT NULL,
    -- The submitting user of a commit or proposal.
    sender text,
    -- For a self-remove proposal: the leaf it removes.
    proposed_removal integer,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (convo_id, seq),
    UNIQUE (convo_id, id)
);
-- A resubmitted commit or proposal is found by its bytes.
CREATE UNIQUE INDEX convo_messages_handshake ON convo_messages (convo_id, payload_hash)
    WHERE kind <> 'application';

-- Welcomes, one per added device and conversation (a re-add replaces it).
CREATE TABLE welcomes (
    convo_id bytea NOT NULL REFERENCES convos ON DELETE CASCADE,
    device_id text NOT NULL,
    key_package_ref bytea NOT NULL,
    welcome bytea NOT NULL,
    epoch bigint NOT NULL,
    commit_seq bigint NOT NULL,
    state text NOT NULL CHECK (state IN ('available', 'in_flight', 'consumed')),
    in_flight_until timestamptz,
    error_details text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (convo_id, device_id)
);

-- A KeyPackage is used by at most one accepted commit (last-resort ones
-- excepted): set in the commit's transaction.
ALTER TABLE key_packages ADD COLUMN used_at timestamptz;
ALTER TABLE key_packages ADD COLUMN used_in bytea;
