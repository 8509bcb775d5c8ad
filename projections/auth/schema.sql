-- Users, access tokens and permission grants, as authentication and authorization read them.
-- user_id is the order of creation in the log (a rebuild gives the same ids): MLflow's
-- clients show it.
CREATE TABLE users (
    username      text    PRIMARY KEY,
    user_key      text    NOT NULL UNIQUE,
    user_id       bigint  NOT NULL UNIQUE,
    password_hash text    NOT NULL,
    is_admin      boolean NOT NULL,
    created_at    bigint  NOT NULL
);
CREATE SEQUENCE user_ids;

-- Only a token's SHA-256 is kept; the secret is shown once, when it is created.
CREATE TABLE access_tokens (
    token_hash    text    PRIMARY KEY,
    token_id      text    NOT NULL UNIQUE,
    username      text    NOT NULL,
    name          text    NOT NULL,
    created_at    bigint  NOT NULL,
    expires_at    bigint,
    revoked       boolean NOT NULL DEFAULT false
);
CREATE INDEX access_tokens_user ON access_tokens (username);

-- One level per user and resource. source 'owner' is the creator's MANAGE; an explicit
-- grant replaces it, a revocation removes either. resource_id '*' covers every resource of
-- the type. Registered models are named by name: a rename moves their grants.
CREATE TABLE grants (
    username      text NOT NULL,
    resource_type text NOT NULL,
    resource_id   text NOT NULL,
    permission    text NOT NULL,
    source        text NOT NULL,
    PRIMARY KEY (username, resource_type, resource_id)
);
CREATE INDEX grants_resource ON grants (resource_type, resource_id);
