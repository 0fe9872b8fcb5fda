-- FlexGate control plane schema, version 3: the fleet view and convergence.
--
-- agents gains what FleetService shows beyond version 1: the agent's capabilities, the replica
-- its stream is on, and the last version sent to it (so "pending" means sent and not yet
-- acknowledged). agent_version_acks records each agent's first ACK of each version, with the
-- time from the version's commit to that ACK, both on the database clock.

ALTER TABLE agents
  ADD COLUMN capabilities  jsonb NOT NULL DEFAULT '[]'::jsonb,
  ADD COLUMN replica       text NOT NULL DEFAULT '',
  ADD COLUMN sent_version  bigint NOT NULL DEFAULT 0,
  ADD COLUMN sent_at       timestamptz;

-- Label selectors ("zone=eu-1,tier=edge") are containment queries on labels.
CREATE INDEX agents_labels ON agents USING gin (labels jsonb_path_ops);

CREATE TABLE agent_version_acks (
  tenant_id            bigint NOT NULL,
  version              bigint NOT NULL,
  agent_id             text NOT NULL,
  -- When the replica received the ACK, on the database clock.
  acked_at             timestamptz NOT NULL,
  -- acked_at - config_versions.created_at, in seconds.
  convergence_seconds  double precision NOT NULL,
  -- As the agent reported (receipt of the snapshot to every worker serving it).
  apply_duration_ms    double precision,
  replica              text NOT NULL DEFAULT '',
  PRIMARY KEY (tenant_id, version, agent_id),
  FOREIGN KEY (tenant_id, version) REFERENCES config_versions (tenant_id, version)
);
