-- FlexGate control plane schema, version 2: agent enrollment tokens and audit queries.
--
-- Enrollment tokens are separate from operator API keys: a token opens
-- AgentService.Connect for its tenant and nothing else, and an API key is never accepted where
-- only a token should be (except the admin keys of tenant "default", kept for agents deployed
-- before tokens existed).

CREATE TABLE enrollment_tokens (
  tenant_id     bigint NOT NULL REFERENCES tenants (tenant_id),
  token_id      bigint GENERATED ALWAYS AS IDENTITY,
  -- Lower-case hex SHA-256 of the token. The token itself is never stored.
  token_hash    text NOT NULL,
  name          text NOT NULL DEFAULT '',
  created_by    bigint,
  created_at    timestamptz NOT NULL DEFAULT now(),
  revoked_at    timestamptz,
  PRIMARY KEY (tenant_id, token_id)
);
CREATE UNIQUE INDEX enrollment_tokens_token_hash ON enrollment_tokens (token_hash);

-- AuditService.List reads one tenant's rows newest first, optionally from a point in time.
CREATE INDEX audit_log_tenant_at ON audit_log (tenant_id, at DESC, audit_id DESC);
