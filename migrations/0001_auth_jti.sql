-- Service-auth replay protection: every accepted token's `jti`, per issuer,
-- kept until the token (plus clock-skew allowance) has expired. After that
-- the token is rejected as expired anyway, so the row can go.
CREATE TABLE auth_jti (
    issuer text NOT NULL,
    jti text NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (issuer, jti)
);

-- For the periodic cleanup of expired rows.
CREATE INDEX auth_jti_expires_at ON auth_jti (expires_at);
