-- FlexGate control plane schema, version 1.
--
-- Every table that holds tenant data is keyed by tenant_id first, so the schema distributes by
-- tenant (for example on Citus) without changes. Rows of config_versions and audit_log are
-- immutable; a trigger refuses UPDATE and DELETE on audit_log.

CREATE TABLE tenants (
  tenant_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name          text NOT NULL UNIQUE,
  -- The live config version (0 = none yet) and its hash. Apply locks this row (FOR UPDATE) to
  -- serialize applies of one tenant.
  live_version  bigint NOT NULL DEFAULT 0,
  live_hash     text NOT NULL DEFAULT '',
  created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
  tenant_id     bigint NOT NULL REFERENCES tenants (tenant_id),
  key_id        bigint GENERATED ALWAYS AS IDENTITY,
  -- Lower-case hex SHA-256 of the key. The key itself is never stored.
  key_hash      text NOT NULL,
  role          text NOT NULL CHECK (role IN ('admin', 'editor', 'viewer')),
  name          text NOT NULL DEFAULT '',
  created_at    timestamptz NOT NULL DEFAULT now(),
  revoked_at    timestamptz,
  PRIMARY KEY (tenant_id, key_id)
);
-- Authentication looks a key up by its hash alone.
CREATE UNIQUE INDEX api_keys_key_hash ON api_keys (key_hash);

CREATE TABLE config_versions (
  tenant_id      bigint NOT NULL REFERENCES tenants (tenant_id),
  version        bigint NOT NULL CHECK (version > 0),
  hash           text NOT NULL,
  -- Canonical (deterministic) protobuf serialization of flexgate.v1.Config.
  body           bytea NOT NULL,
  author_key_id  bigint,
  message        text NOT NULL DEFAULT '',
  created_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, version)
);

CREATE TABLE agents (
  tenant_id          bigint NOT NULL REFERENCES tenants (tenant_id),
  agent_id           text NOT NULL,
  labels             jsonb NOT NULL DEFAULT '{}'::jsonb,
  agent_version      text NOT NULL DEFAULT '',
  connected          boolean NOT NULL DEFAULT false,
  connected_at       timestamptz,
  -- The stream the agent is connected on; a late disconnect of an older stream is ignored.
  session_id         text NOT NULL DEFAULT '',
  last_seen          timestamptz,
  healthy            boolean NOT NULL DEFAULT true,
  applied_version    bigint NOT NULL DEFAULT 0,
  applied_hash       text NOT NULL DEFAULT '',
  applied_at         timestamptz,
  -- Milliseconds from receipt of the snapshot to every worker serving it, as the agent reports.
  apply_duration_ms  double precision,
  last_nack_version  bigint,
  last_nack_error    text,
  last_nack_at       timestamptz,
  PRIMARY KEY (tenant_id, agent_id)
);

CREATE TABLE audit_log (
  tenant_id     bigint NOT NULL REFERENCES tenants (tenant_id),
  audit_id      bigint GENERATED ALWAYS AS IDENTITY,
  at            timestamptz NOT NULL DEFAULT now(),
  -- The key that made the change (NULL for the control plane itself, e.g. at bootstrap).
  actor_key_id  bigint,
  action        text NOT NULL,
  target        text NOT NULL DEFAULT '',
  summary       text NOT NULL DEFAULT '',
  request_id    text NOT NULL DEFAULT '',
  PRIMARY KEY (tenant_id, audit_id)
);

CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_log is append-only';
END;
$$;

CREATE TRIGGER audit_log_append_only
  BEFORE UPDATE OR DELETE ON audit_log
  FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();
