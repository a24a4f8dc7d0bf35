-- The sub-status of a Running task (SubStatus: 'active', 'deferred'), and the events of its
-- changes ('deferred', 'resumed'). The new CHECK on event types is added NOT VALID and then
-- validated, so that the validation scan holds no lock that blocks writers.
ALTER TABLE task_executions ADD COLUMN sub_status text
    CHECK (sub_status IS NULL OR sub_status IN ('active', 'deferred'));

ALTER TABLE execution_events DROP CONSTRAINT execution_events_event_type_check;
ALTER TABLE execution_events ADD CONSTRAINT execution_events_event_type_check
    CHECK (event_type IN ('created', 'ready', 'started', 'claimed', 'completed', 'failed', 'skipped', 'abandoned', 'retry_scheduled', 'recovered', 'reset', 'released', 'deferred', 'resumed'))
    NOT VALID;
ALTER TABLE execution_events VALIDATE CONSTRAINT execution_events_event_type_check;
