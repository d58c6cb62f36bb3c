-- The KeyPackage directory. A row is kept after its KeyPackage is handed out
-- (`handed_out_at`): a Welcome names its recipients by KeyPackageRef, and the
-- group lifecycle routes it to the device that published that KeyPackage.
CREATE TABLE key_packages (
    -- KeyPackageRef (RFC 9420 section 5.2): the hash of the KeyPackage.
    key_package_ref bytea PRIMARY KEY,
    -- The user DID and the credential identity `did#device`.
    did text NOT NULL,
    device_id text NOT NULL,
    cipher_suite text NOT NULL,
    -- The MLSMessage (wire format mls_key_package) as published.
    key_package bytea NOT NULL,
    last_resort boolean NOT NULL,
    -- The end of the KeyPackage's lifetime (not_after).
    expires_at timestamptz NOT NULL,
    published_at timestamptz NOT NULL DEFAULT now(),
    -- Set when a non-last-resort KeyPackage is handed out: never again.
    handed_out_at timestamptz,
    handed_out_to text,
    -- Set when a newer last-resort KeyPackage of the device replaced this one.
    replaced_at timestamptz,
    CHECK (NOT (last_resort AND handed_out_at IS NOT NULL))
);

-- Fetching: the oldest unused KeyPackage of each device.
CREATE INDEX key_packages_unused ON key_packages (did, cipher_suite, device_id, published_at)
    WHERE handed_out_at IS NULL AND NOT last_resort;

-- At most one current last-resort KeyPackage per device and cipher suite.
CREATE UNIQUE INDEX key_packages_one_last_resort ON key_packages (device_id, cipher_suite)
    WHERE last_resort AND replaced_at IS NULL;

-- Status and the per-device limit.
CREATE INDEX key_packages_device ON key_packages (did, device_id, cipher_suite);
