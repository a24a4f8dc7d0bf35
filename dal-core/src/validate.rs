//! Input validation shared by every backend, run before anything is sent.
//!
//! The rules accept exactly what both PostgreSQL and SQLite store and read back unchanged, so a
//! call is accepted or rejected the same way on each backend. Rejected input writes nothing.

use std::borrow::Cow;
use std::collections::HashMap;

use chrono::{DateTime, Datelike, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::error::{Problem, ValidationError};
use crate::{NewTaskExecution, TaskStatus};

/// The longest task name, in characters.
pub const TASK_NAME_MAX_CHARS: usize = 255;
/// The longest reason or error message, in bytes of UTF-8.
pub const MESSAGE_MAX_BYTES: usize = 64 * 1024;
/// The deepest nesting of a JSON document (SQLite reads JSON back with a parser that stops at
/// 128 levels; PostgreSQL has its own stack limit).
pub const JSON_MAX_DEPTH: usize = 64;

type Checked<T = ()> = Result<T, ValidationError>;

/// Checks one new task.
pub fn new_task(new: &NewTaskExecution) -> Checked {
    task_name(&new.task_name)?;
    if !matches!(new.status, TaskStatus::NotStarted | TaskStatus::Ready) {
        return Err(ValidationError::new("status", Problem::StatusNotAllowed(new.status)));
    }
    in_range("max_attempts", new.max_attempts, 1, i32::MAX)?;
    in_range("attempt", new.attempt, 1, new.max_attempts)?;
    json("trigger_rules", &new.trigger_rules)?;
    json("task_configuration", &new.task_configuration)?;
    if let Some(at) = new.retry_at {
        time("retry_at", at)?;
    }
    Ok(())
}

/// Checks a batch: every task, and no workflow execution and task name twice.
pub fn new_tasks(news: &[NewTaskExecution]) -> Checked {
    let mut seen: HashMap<(Uuid, &str), usize> = HashMap::with_capacity(news.len());
    for (index, new) in news.iter().enumerate() {
        new_task(new).map_err(|e| e.in_batch(index))?;
        if let Some(first) = seen.insert((new.workflow_execution_id, &new.task_name), index) {
            return Err(ValidationError::new("task_name", Problem::DuplicateInBatch { first })
                .in_batch(index));
        }
    }
    Ok(())
}

/// Checks a task name: not blank, at most [`TASK_NAME_MAX_CHARS`] characters, no control
/// characters (NUL included).
pub fn task_name(name: &str) -> Checked {
    const FIELD: &str = "task_name";
    if name.trim().is_empty() {
        return Err(ValidationError::new(FIELD, Problem::Blank));
    }
    let len = name.chars().count();
    if len > TASK_NAME_MAX_CHARS {
        return Err(ValidationError::new(
            FIELD,
            Problem::TooLong { max: TASK_NAME_MAX_CHARS, len, unit: "characters" },
        ));
    }
    if name.contains('\0') {
        return Err(ValidationError::new(FIELD, Problem::ContainsNul));
    }
    if name.chars().any(char::is_control) {
        return Err(ValidationError::new(FIELD, Problem::ContainsControl));
    }
    Ok(())
}

/// Checks a reason or an error message: at most [`MESSAGE_MAX_BYTES`], no NUL. An empty
/// message is allowed. See [`sanitize_message`] to make any text acceptable.
pub fn message(field: &str, text: &str) -> Checked {
    if text.len() > MESSAGE_MAX_BYTES {
        return Err(ValidationError::new(
            field,
            Problem::TooLong { max: MESSAGE_MAX_BYTES, len: text.len(), unit: "bytes" },
        ));
    }
    if text.contains('\0') {
        return Err(ValidationError::new(field, Problem::ContainsNul));
    }
    Ok(())
}

/// Makes any text a valid message: NUL characters become U+FFFD and the text is cut, at a
/// character boundary, to [`MESSAGE_MAX_BYTES`]. For engines that record whatever a task
/// printed rather than have the failure rejected.
pub fn sanitize_message(text: &str) -> Cow<'_, str> {
    let mut text = if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    };
    if text.len() > MESSAGE_MAX_BYTES {
        let mut end = MESSAGE_MAX_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        match &mut text {
            Cow::Owned(owned) => owned.truncate(end),
            Cow::Borrowed(borrowed) => *borrowed = &borrowed[..end],
        }
    }
    text
}

/// The earliest time [`time`] accepts: 0001-01-01T00:00:00Z.
pub fn earliest_time() -> DateTime<Utc> {
    // 0001-01-01T00:00:00Z is 62,135,596,800 s before the Unix epoch; chrono holds it.
    DateTime::from_timestamp(-62_135_596_800, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Checks that `at` lies in the years 1 to 9999, which both backends store.
pub fn time(field: &str, at: DateTime<Utc>) -> Checked {
    if (1..=9999).contains(&at.year()) {
        Ok(())
    } else {
        Err(ValidationError::new(field, Problem::TimeOutOfRange))
    }
}

/// Checks that `value` lies in `min..=max`.
pub fn in_range(field: &str, value: i32, min: i32, max: i32) -> Checked {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            Problem::OutOfRange { min: min.into(), max: max.into(), value: value.into() },
        ))
    }
}

/// Checks a JSON document: no NUL in any string or key (PostgreSQL's `jsonb` rejects
/// `\u0000`), nesting at most [`JSON_MAX_DEPTH`].
pub fn json(field: &str, value: &Value) -> Checked {
    fn walk(value: &Value, depth: usize) -> Result<(), Problem> {
        if depth > JSON_MAX_DEPTH {
            return Err(Problem::TooDeep { max: JSON_MAX_DEPTH });
        }
        match value {
            Value::String(s) if s.contains('\0') => Err(Problem::ContainsNul),
            Value::Array(items) => items.iter().try_for_each(|v| walk(v, depth + 1)),
            Value::Object(map) => map.iter().try_for_each(|(k, v)| {
                if k.contains('\0') { Err(Problem::ContainsNul) } else { walk(v, depth + 1) }
            }),
            _ => Ok(()),
        }
    }
    walk(value, 1).map_err(|problem| ValidationError::new(field, problem))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn new() -> NewTaskExecution {
        NewTaskExecution::new(Uuid::now_v7(), "extract")
    }

    fn problem_of(result: Checked) -> Option<(String, Problem)> {
        result.err().map(|e| (e.field, e.problem))
    }

    #[test]
    fn accepts_the_defaults_and_edge_values() {
        assert_eq!(new_task(&new()), Ok(()));
        let long_name = "é".repeat(TASK_NAME_MAX_CHARS);
        assert_eq!(task_name(&long_name), Ok(()));
        assert_eq!(task_name("🦀 four-byte"), Ok(()));
        assert_eq!(message("error", &"x".repeat(MESSAGE_MAX_BYTES)), Ok(()));
        assert_eq!(message("error", ""), Ok(()));
    }

    #[test]
    fn rejects_bad_names() {
        assert_eq!(problem_of(task_name("  ")), Some(("task_name".into(), Problem::Blank)));
        assert_eq!(
            problem_of(task_name(&"a".repeat(256))),
            Some(("task_name".into(), Problem::TooLong { max: 255, len: 256, unit: "characters" }))
        );
        assert_eq!(problem_of(task_name("a\0b")), Some(("task_name".into(), Problem::ContainsNul)));
        assert_eq!(
            problem_of(task_name("a\nb")),
            Some(("task_name".into(), Problem::ContainsControl))
        );
    }

    #[test]
    fn rejects_bad_attempts_and_statuses() {
        let zero = NewTaskExecution { max_attempts: 0, ..new() };
        assert_eq!(
            problem_of(new_task(&zero)),
            Some((
                "max_attempts".into(),
                Problem::OutOfRange { min: 1, max: i32::MAX.into(), value: 0 }
            ))
        );
        let beyond = NewTaskExecution { attempt: 4, max_attempts: 3, ..new() };
        assert_eq!(
            problem_of(new_task(&beyond)),
            Some(("attempt".into(), Problem::OutOfRange { min: 1, max: 3, value: 4 }))
        );
        let running = new().with_status(TaskStatus::Running);
        assert_eq!(
            problem_of(new_task(&running)),
            Some(("status".into(), Problem::StatusNotAllowed(TaskStatus::Running)))
        );
    }

    #[test]
    fn rejects_json_that_one_backend_cannot_store() {
        let nul = new().with_configuration(json!({"a": ["ok", "b\u{0}"]}));
        assert_eq!(
            problem_of(new_task(&nul)),
            Some(("task_configuration".into(), Problem::ContainsNul))
        );
        let nul_key = new().with_trigger_rules(json!({"k\u{0}": 1}));
        assert_eq!(
            problem_of(new_task(&nul_key)),
            Some(("trigger_rules".into(), Problem::ContainsNul))
        );
        let mut deep = json!(1);
        for _ in 0..JSON_MAX_DEPTH {
            deep = json!([deep]);
        }
        assert_eq!(
            problem_of(json("c", &deep)),
            Some(("c".into(), Problem::TooDeep { max: JSON_MAX_DEPTH }))
        );
        let mut ok = json!(1);
        for _ in 1..JSON_MAX_DEPTH {
            ok = json!([ok]);
        }
        assert_eq!(json("c", &ok), Ok(()));
    }

    #[test]
    fn rejects_times_outside_years_1_to_9999() {
        let far = DateTime::<Utc>::from_timestamp(253_402_300_800, 0); // 10000-01-01
        assert_eq!(far.map(|t| time("retry_at", t).is_err()), Some(true));
        let last = DateTime::<Utc>::from_timestamp(253_402_300_799, 0); // 9999-12-31T23:59:59
        assert_eq!(last.map(|t| time("retry_at", t)), Some(Ok(())));
    }

    #[test]
    fn batches_name_the_item_and_catch_repeats() {
        let wf = Uuid::now_v7();
        let batch = [
            NewTaskExecution::new(wf, "a"),
            NewTaskExecution::new(wf, "b"),
            NewTaskExecution::new(wf, "a"),
        ];
        assert_eq!(
            problem_of(new_tasks(&batch)),
            Some(("tasks[2].task_name".into(), Problem::DuplicateInBatch { first: 0 }))
        );
        let bad = [NewTaskExecution::new(wf, "a"), NewTaskExecution::new(wf, "")];
        assert_eq!(
            problem_of(new_tasks(&bad)),
            Some(("tasks[1].task_name".into(), Problem::Blank))
        );
    }

    #[test]
    fn sanitize_makes_any_text_valid() {
        let text = format!("{}é", "x".repeat(MESSAGE_MAX_BYTES - 1));
        let clean = sanitize_message(&text);
        assert_eq!(clean.len(), MESSAGE_MAX_BYTES - 1);
        assert_eq!(message("e", &clean), Ok(()));
        assert_eq!(sanitize_message("a\0b"), "a\u{FFFD}b");
        assert!(matches!(sanitize_message("plain"), Cow::Borrowed("plain")));
    }
}
