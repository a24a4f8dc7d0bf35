CREATE TABLE task_executions (
    id                    uuid        NOT NULL PRIMARY KEY,
    workflow_execution_id uuid        NOT NULL,
    task_name             text        NOT NULL CHECK (char_length(task_name) BETWEEN 1 AND 255),
    status                text        NOT NULL CHECK (status IN ('not_started', 'ready', 'running', 'completed', 'failed', 'skipped')),
    attempt               integer     NOT NULL CHECK (attempt >= 1),
    max_attempts          integer     NOT NULL CHECK (max_attempts >= 1),
    trigger_rules         jsonb       NOT NULL,
    task_configuration    jsonb       NOT NULL,
    error_details         text,
    last_error            text,
    retry_at              timestamptz,
    started_at            timestamptz,
    completed_at          timestamptz,
    recovery_attempts     integer     NOT NULL DEFAULT 0 CHECK (recovery_attempts >= 0),
    last_recovery_at      timestamptz,
    claimed_by            uuid,
    heartbeat_at          timestamptz,
    abandoned_at          timestamptz,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    CHECK (attempt <= max_attempts),
    CONSTRAINT task_executions_workflow_task_name_key UNIQUE (workflow_execution_id, task_name)
);

-- The unique constraint's index serves reads by workflow execution.
-- Ready tasks by due time, for claiming and retry dispatch.
CREATE INDEX task_executions_ready_idx ON task_executions (retry_at, id) WHERE status = 'ready';
-- Claimed tasks by last heartbeat, for the stale-claim sweep.
CREATE INDEX task_executions_claimed_idx ON task_executions (heartbeat_at) WHERE claimed_by IS NOT NULL;
