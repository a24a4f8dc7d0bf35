//! The wake-up latency benchmark: the time from the write that makes a task claimable to the claim
//! returning it, with runners waiting on an idle store. `cargo run --release -p dal-benches --bin
//! wake -- --help`.
//!
//! Each configuration (backend, runners, mode) gets a fresh database: the workload's [`Target`],
//! a temporary SQLite file or a fresh PostgreSQL schema. Its runners loop on `claim_ready(runner,
//! 1)`, and `wait_for_work(1 s)` after a claim that found nothing. A writer creates one `Ready`
//! task every `--every-ms`, named after the wall-clock time (µs) read just before its `create`; a
//! latency is the wall-clock time at which the claim returned the task minus its name (one clock
//! for writers in this process and in another), and "from commit" minus the time the `create`
//! returned, when the task became claimable (the target is judged on it). Modes: `in-process`, the writer uses the runners'
//! store; `cross-store`, a store of its own in this process (heard as another process's writes:
//! PostgreSQL `NOTIFY` to `LISTEN`, SQLite's `data_version`); `cross-process` (SQLite), this
//! binary run again with `--writer PATH`. Beside the latency, the `create`'s and the claim's own
//! times (p50; a latency holds both), and the runners' empty claims, wake-ups and timeouts from
//! the first write (after a warm-up) to the last claim.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use std::{path::PathBuf, process::Command, process::ExitCode, thread};

use chrono::Utc;
use clap::Parser;
use dal_benches::baseline::Backend;
use dal_benches::workload::{args::Args, db::Db, db::SERVER, db::Target, write_json};
use dal_core::{History, NewTaskExecution, TaskExecutionStore, TaskStatus, Wake, WakeSource};
use dal_tests::counter::StatementCounter;
use serde::Serialize;
use uuid::Uuid;

/// Wake-up latency (write to claim) with 1 and 16 runners waiting, in each mode, on each backend.
#[derive(Debug, Parser)]
#[command(name = "wake", version)]
struct WakeArgs {
    /// Backends to run on.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    backends: Vec<Backend>,
    /// The PostgreSQL server and database (each configuration in a fresh schema there).
    #[arg(long, value_name = "URL", default_value = SERVER)]
    database_url: String,
    /// Runners waiting, one configuration each.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    runners: Vec<u32>,
    /// Tasks written, each a latency, per configuration.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..))]
    samples: u32,
    /// Pause before each write (ms).
    #[arg(long, default_value_t = 20)]
    every_ms: u64,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Only write `--samples` tasks to the SQLite file PATH (the `cross-process` writer).
    #[arg(long, value_name = "PATH", hide = true)]
    writer: Option<PathBuf>,
}

/// Before the first write: stores open, the watchers started, waiters waiting.
const WARM_UP: Duration = Duration::from_millis(300);

/// One configuration's figures; `sources`: the runners' store's, then the writer store's.
#[derive(Debug, Serialize)]
struct Row {
    backend: Backend,
    runners: u32,
    mode: &'static str,
    sources: Vec<String>,
    samples: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    committed_p50_ms: f64,
    committed_p99_ms: f64,
    target_p99_ms: f64,
    met: bool,
    write_p50_ms: f64,
    claim_p50_ms: f64,
    empty_claims: u64,
    wakeups: u64,
    timeouts: u64,
}

/// What a configuration's threads share: latencies and the claims' own times (µs); empty claims,
/// wake-ups, timeouts.
#[derive(Default)]
struct Run {
    /// Each task's name (its write's start) and when its claim returned, wall-clock µs.
    latencies: Mutex<Vec<(i64, i64)>>,
    claims: Mutex<Vec<i64>>,
    counts: [AtomicU64; 3],
    stop: AtomicBool,
}

fn main() -> ExitCode {
    let args = WakeArgs::parse();
    let every = Duration::from_millis(args.every_ms);
    let done = match &args.writer {
        Some(path) => dal_sqlite::open(path.to_string_lossy())
            .map_err(|e| format!("cannot open {}: {e}", path.display()))
            .and_then(|store| write(&store, args.samples, every))
            .map(|written| written.iter().for_each(|(start, end)| println!("{start} {end}"))),
        None => bench(&args),
    };
    done.map_or_else(
        |message| {
            eprintln!("wake: {message}");
            ExitCode::from(2)
        },
        |()| ExitCode::SUCCESS,
    )
}

/// Runs every configuration and prints (and writes) its row.
fn bench(args: &WakeArgs) -> Result<(), String> {
    let modes = |b| ["in-process", "cross-store", "cross-process"].into_iter().take(2 + b as usize);
    let (samples, every) = (args.samples, args.every_ms);
    println!("wake-up latency: {samples} writes a configuration, one every {every} ms");
    println!(
        "backend  runners  mode           claimed  p50 ms  p99 ms  max ms  from commit p50/p99  \
         p99 target  write p50  claim p50  empty/write  wakes/write  timeouts  sources"
    );
    let mut rows = Vec::new();
    for &backend in &args.backends {
        for mode in modes(backend == Backend::Sqlite) {
            for &runners in &args.runners {
                let r = measure(args, backend, runners, mode)?;
                let Row { samples: n, p50_ms, p99_ms, max_ms, target_p99_ms, .. } = &r;
                let (c50, c99) = (r.committed_p50_ms, r.committed_p99_ms);
                let (write, claim) = (r.write_p50_ms, r.claim_p50_ms);
                let per_write = |count: u64| count as f64 / f64::from(samples);
                let (empty, wakes, verdict) = (
                    per_write(r.empty_claims),
                    per_write(r.wakeups),
                    ["MISSED", "met"][r.met as usize],
                );
                println!(
                    "{:<9}{runners:>7}  {mode:<14}{n:>8}{p50_ms:>8.2}{p99_ms:>8.2}{max_ms:>8.2}\
                     {c50:>13.2} /{c99:>6.2}{target_p99_ms:>7.0} {verdict:<6}\
                     {write:>11.2}{claim:>11.2}{empty:>13.2}{wakes:>13.2}{:>10}  {}",
                    backend.name(),
                    r.timeouts,
                    r.sources.join(" / ")
                );
                rows.push(r);
            }
        }
    }
    args.json.as_ref().map_or(Ok(()), |path| write_json(path, &rows))
}

/// One configuration on a fresh database.
fn measure(
    args: &WakeArgs,
    backend: Backend,
    runners: u32,
    mode: &'static str,
) -> Result<Row, String> {
    let mut workload = Args::parse_from(["workload"]);
    workload.database_url = (backend == Backend::Postgres).then(|| args.database_url.clone());
    let target = Target::open(&workload)?;
    let open = |size| target.connect(size, History::Kept, &StatementCounter::new());
    let store = open(runners + 2)?;
    let other = if mode == "cross-store" { Some(open(2)?) } else { None };
    let stores = std::iter::once(&store).chain(&other);
    let sources: Vec<WakeSource> = stores.map(|s| s.wakeups().source()).collect();
    let (run, every) = (Run::default(), Duration::from_millis(args.every_ms));
    let (written, counts) = thread::scope(|scope| {
        let waiting: Vec<_> = (0..runners).map(|_| scope.spawn(|| runner(&*store, &run))).collect();
        thread::sleep(WARM_UP);
        run.counts.iter().for_each(|count| count.store(0, Relaxed));
        let written = match (&target.db, mode) {
            (Db::Sqlite(path), "cross-process") => writer(path, args),
            _ => write(other.as_deref().unwrap_or(&*store), args.samples, every),
        };
        // The last claims, then the runners stop (no `?` before), each woken by a task of its own.
        let claimed = || lock(&run.latencies).len();
        let deadline = Instant::now() + Duration::from_secs(2);
        while claimed() < args.samples as usize && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        let counts = run.counts.each_ref().map(|count| count.load(Relaxed));
        run.stop.store(true, Relaxed);
        let workflow = Uuid::now_v7();
        let stops = (0..runners).map(|i| task(workflow, format!("stop {i}")));
        store.create_many(&stops.collect::<Vec<_>>()).map_err(|e| format!("create_many: {e}"))?;
        let stopped =
            waiting.into_iter().map(|t| t.join().unwrap_or(Err("a runner panicked".into())));
        stopped.collect::<Result<(), String>>()?;
        Ok::<_, String>((written, counts))
    })?;
    let (written, claims) = (written?, &mut lock(&run.claims));
    let ends: std::collections::HashMap<i64, i64> = written.iter().copied().collect();
    let mut writes: Vec<i64> = written.iter().map(|(start, end)| end - start).collect();
    let pairs = lock(&run.latencies);
    let latencies = &mut pairs.iter().map(|(start, claimed)| claimed - start).collect::<Vec<_>>();
    let committed = pairs.iter().filter_map(|(start, claimed)| Some(claimed - ends.get(start)?));
    let committed = &mut committed.collect::<Vec<_>>();
    // Another process's writes are seen at the next look at SQLite's change counter.
    let target_p99_ms = match sources[0] {
        WakeSource::ChangeChecks { every } if mode != "in-process" => {
            every.as_secs_f64() * 1e3 + 5.0
        }
        _ => 5.0,
    };
    let [empty_claims, wakeups, timeouts] = counts;
    Ok(Row {
        backend,
        runners,
        mode,
        sources: sources.iter().map(|s| format!("{s:?}")).collect(),
        samples: latencies.len(),
        p50_ms: quantile(latencies, 0.5),
        p99_ms: quantile(latencies, 0.99),
        max_ms: quantile(latencies, 1.0),
        committed_p50_ms: quantile(committed, 0.5),
        committed_p99_ms: quantile(committed, 0.99),
        target_p99_ms,
        met: quantile(committed, 0.99) <= target_p99_ms && latencies.len() == args.samples as usize,
        write_p50_ms: quantile(&mut writes, 0.5),
        claim_p50_ms: quantile(claims, 0.5),
        empty_claims,
        wakeups,
        timeouts,
    })
}

/// A `Ready` task.
fn task(workflow: Uuid, name: String) -> NewTaskExecution {
    NewTaskExecution::new(workflow, name).with_status(TaskStatus::Ready)
}

/// Creates `samples` tasks, one after each `every`, each named after the wall-clock µs before
/// it; returns that time and the time its `create` returned (committed), for each.
fn write(
    store: &dyn TaskExecutionStore,
    samples: u32,
    every: Duration,
) -> Result<Vec<(i64, i64)>, String> {
    let (workflow, mut written) = (Uuid::now_v7(), Vec::new());
    for _ in 0..samples {
        thread::sleep(every);
        let start = Utc::now().timestamp_micros();
        store.create(&task(workflow, start.to_string())).map_err(|e| format!("create: {e}"))?;
        written.push((start, Utc::now().timestamp_micros()));
    }
    Ok(written)
}

/// This binary run again, as the writer of `--samples` tasks to the SQLite file `path`.
fn writer(path: &std::path::Path, args: &WakeArgs) -> Result<Vec<(i64, i64)>, String> {
    let (samples, every) = (args.samples.to_string(), args.every_ms.to_string());
    let mut child = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
    let child = child.args(["--samples", &samples, "--every-ms", &every, "--writer"]).arg(path);
    let out = child.output().map_err(|e| format!("the writer process: {e}"))?;
    if !out.status.success() {
        return Err(format!("the writer process: {}", out.status));
    }
    let times = |line: &str| -> Option<(i64, i64)> {
        let (start, end) = line.split_once(' ')?;
        Some((start.parse().ok()?, end.parse().ok()?))
    };
    Ok(String::from_utf8_lossy(&out.stdout).lines().filter_map(times).collect())
}

/// A runner: claims one task at a time, records its latency, waits when it found nothing.
fn runner(store: &dyn TaskExecutionStore, run: &Run) -> Result<(), String> {
    let id = Uuid::now_v7();
    while !run.stop.load(Relaxed) {
        let began = Instant::now();
        let claimed = store.claim_ready(id, 1).map_err(|e| format!("claim_ready: {e}"))?;
        let (now, took) = (Utc::now().timestamp_micros(), began.elapsed().as_micros() as i64);
        let written = claimed.iter().filter_map(|c| c.task.task_name.parse::<i64>().ok());
        let latencies: Vec<(i64, i64)> = written.map(|at| (at, now)).collect();
        if !latencies.is_empty() {
            lock(&run.claims).push(took);
        }
        lock(&run.latencies).extend(latencies);
        if claimed.is_empty() {
            run.counts[0].fetch_add(1, Relaxed);
            let woke = store.wait_for_work(Duration::from_secs(1)).map_err(|e| e.to_string())?;
            run.counts[if woke == Wake::Work { 1 } else { 2 }].fetch_add(1, Relaxed);
        }
    }
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The `q` quantile (nearest rank) of `values` (µs), in ms; NaN for none.
fn quantile(values: &mut [i64], q: f64) -> f64 {
    values.sort_unstable();
    let rank = (values.len() as f64 * q).ceil() as usize;
    values.get(rank.max(1) - 1).map_or(f64::NAN, |&us| us as f64 / 1e3)
}
