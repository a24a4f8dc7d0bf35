DELETE FROM execution_events WHERE event_type IN ('deferred', 'resumed');
ALTER TABLE execution_events DROP CONSTRAINT execution_events_event_type_check;
ALTER TABLE execution_events ADD CONSTRAINT execution_events_event_type_check
    CHECK (event_type IN ('created', 'ready', 'started', 'claimed', 'completed', 'failed', 'skipped', 'abandoned', 'retry_scheduled', 'recovered', 'reset', 'released'));
ALTER TABLE task_executions DROP COLUMN sub_status;
