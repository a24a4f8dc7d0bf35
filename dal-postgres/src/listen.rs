//! Other processes' writes, heard by `LISTEN` on a connection of the store's own: every write
//! that leaves tasks claimable notifies the store's channel in the same statement
//! (`backend::WOKE`), with a token saying which store sent it.

use std::sync::Weak;
use std::time::Duration;

use chrono::DateTime;
use dal_core::wake::{Bell, WakeSource};
use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

/// How often the listening connection is read while runners wait.
const BUSY: Duration = Duration::from_millis(1);
/// How often it is read (its notifications drained, its loss found) while none waits; a
/// first waiter has it read at once.
const IDLE: Duration = Duration::from_millis(50);

/// What a store listens on, and how.
#[derive(Clone, Debug)]
pub(crate) struct Listen {
    /// The URL to listen at; `None` behind a transaction pooler (no `LISTEN` there).
    pub url: Option<String>,
    /// The channel: one per schema, so that stores on other schemas are not woken.
    pub channel: String,
    /// This store's mark on its notifications, which its own listener skips (its writes
    /// ring its bell directly).
    pub token: String,
    /// How often waiters wake while nothing can be heard.
    pub fallback: Duration,
}

impl Listen {
    pub(crate) fn source(&self) -> WakeSource {
        match self.url {
            Some(_) => WakeSource::Notifications { fallback: self.fallback },
            None => WakeSource::Polling { every: self.fallback },
        }
    }
}

/// The channel of the store whose session's schema is `schema`, at most 63 bytes.
pub(crate) fn channel(schema: Option<&str>) -> String {
    let mut channel = format!("dal_work.{}", schema.unwrap_or(""));
    while channel.len() > 63 {
        channel.pop();
    }
    channel
}

/// A token for a store's notifications: unique among the stores of every process.
pub(crate) fn token() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// Starts the listener of `listen`, ringing `bell` until it is dropped. After each (re)connect
/// every waiter wakes once, as a notification may have been missed; while disconnected,
/// waiters wake every `fallback`, and connecting is tried as often.
pub(crate) fn spawn(listen: Listen, bell: Weak<Bell>) {
    let Some(url) = listen.url.clone() else { return };
    let run = move || {
        let mut conn: Option<PgConnection> = None;
        loop {
            let Some(bell) = bell.upgrade() else { return };
            if conn.is_none() {
                match connect(&url, &listen.channel) {
                    Ok(listening) => {
                        conn = Some(listening);
                        bell.set_polling(None);
                        bell.ring_all();
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, every = ?listen.fallback, "cannot listen for work: waiters wake at the fallback interval");
                        bell.set_polling(Some(listen.fallback));
                        drop(bell);
                        std::thread::sleep(listen.fallback);
                        continue;
                    }
                }
            }
            if let Some(listening) = &mut conn
                && let Err(err) = hear(listening, &listen.token, &bell)
            {
                tracing::warn!(error = %err, "the listening connection was lost; connecting again");
                conn = None;
                bell.set_polling(Some(listen.fallback));
                continue;
            }
            if bell.waiting() > 0 {
                drop(bell);
                std::thread::sleep(BUSY);
            } else {
                bell.until_waited(IDLE);
            }
        }
    };
    if let Err(err) = std::thread::Builder::new().name("dal-listen".into()).spawn(run) {
        tracing::warn!(error = %err, "no listener: waiters wake on this store's writes and their timeouts only");
    }
}

fn connect(url: &str, channel: &str) -> diesel::QueryResult<PgConnection> {
    let mut conn = PgConnection::establish(url).map_err(|err| {
        diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::ClosedConnection,
            Box::new(err.to_string()),
        )
    })?;
    conn.batch_execute(&format!("LISTEN \"{}\"", channel.replace('"', "\"\"")))?;
    Ok(conn)
}

/// Rings `bell` for each notification received of another store: its count of tasks due now
/// and its later due times.
fn hear(conn: &mut PgConnection, token: &str, bell: &Bell) -> diesel::QueryResult<()> {
    for notification in conn.notifications_iter() {
        let notification = notification?;
        let mut words = notification.payload.split(' ');
        if words.next() == Some(token) {
            continue;
        }
        let now = words.next().and_then(|n| n.parse().ok()).unwrap_or(1);
        let later =
            words.filter_map(|w| w.parse().ok()).filter_map(DateTime::from_timestamp_micros);
        bell.ring(now, later);
    }
    Ok(())
}
