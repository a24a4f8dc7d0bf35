DROP TABLE task_executions;
