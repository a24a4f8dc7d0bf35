-- count_by_status (metrics gauges) counts a status index instead of reading every row.
CREATE INDEX task_executions_status_idx ON task_executions (status);
