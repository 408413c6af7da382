//! The `switchyard` binary: parse the command line, load settings, start logging, and call
//! into the library.

use clap::{Parser, Subcommand};
use switchyard::app::{self, Roles};
use switchyard::config::Config;
use switchyard::engine::dlq::DlqFilter;
use switchyard::engine::{Lane, TaskSpec};
use switchyard::{bench, commands, telemetry};

/// Memory freed on another thread than the one that allocated it — request buffers, batches
/// handed between tasks — is the common case here; glibc's allocator serializes it on an arena
/// lock (measured: a quarter of the webhook path's CPU in malloc, free and futex waits).
/// jemalloc takes it without that lock; mimalloc did too, but left one run in two with a p99
/// over 5 ms where jemalloc and glibc kept it under 2 ms.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main`: a background thread gives freed memory back to the
/// system within seconds of a burst (without it, pages are only purged while the process goes
/// on allocating, and an idle process keeps its peak).
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: MallocConf = MallocConf(c"background_thread:true,dirty_decay_ms:5000,muzzy_decay_ms:5000".as_ptr());

#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);
// SAFETY: it points at a string constant, never written.
unsafe impl Sync for MallocConf {}

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Customer-conversation webhooks onto Redis Streams, and the workers that answer them"
)]
struct Cli {
    /// TOML settings file; SWITCHYARD_* variables override it.
    #[arg(long, global = true, env = "SWITCHYARD_CONFIG")]
    config: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run Switchyard: the API, workers and scheduler (all by default).
    Serve {
        /// Roles to run: api, worker, scheduler.
        #[arg(long, default_value = "api,worker,scheduler", value_parser = Roles::parse)]
        roles: Roles,
        /// Lanes this process's workers read.
        #[arg(long, default_value = "conversations,webhooks,analytics", value_parser = parse_lanes)]
        lanes: LaneList,
    },
    /// Check the settings, Redis and its guardrails.
    Check,
    /// Queue, inspect and cancel tasks.
    #[command(subcommand)]
    Tasks(TasksCmd),
    /// Work with the dead-letter queue.
    #[command(subcommand)]
    Dlq(DlqCmd),
    /// Pause, resume and list the lanes.
    #[command(subcommand)]
    Lanes(LanesCmd),
    /// Measure the engine on this machine.
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(Subcommand)]
enum LanesCmd {
    /// Each lane's figures, and whether it is paused.
    List,
    /// Stop workers reading a lane (within a second); tasks are still accepted, and what is
    /// running finishes.
    Pause { lane: String },
    /// Let workers read a paused lane again.
    Resume { lane: String },
}

#[derive(Subcommand)]
enum TasksCmd {
    /// Queue a task of a registered kind.
    Enqueue {
        kind: String,
        /// JSON payload.
        #[arg(long)]
        payload: Option<String>,
        #[arg(long, value_parser = parse_lane)]
        lane: Option<Lane>,
        #[arg(long)]
        idempotency_key: Option<String>,
        #[arg(long)]
        max_attempts: Option<u32>,
        /// Run no sooner than this long from now (90s, 10m, 2h).
        #[arg(long, value_parser = parse_duration, conflicts_with = "run_at")]
        delay: Option<std::time::Duration>,
        /// Run no sooner than this time (RFC 3339, e.g. 2026-12-24T18:00:00Z).
        #[arg(long, value_parser = parse_time)]
        run_at: Option<u64>,
    },
    /// List the tasks queued for later, the first due first.
    Scheduled {
        #[arg(long, value_parser = parse_lane)]
        lane: Option<Lane>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Make a task queued for later due now.
    RunNow { task_id: String },
    /// List the tasks that finished lately, newest first (the history keeps TASK_HISTORY).
    List {
        /// SUCCESS, FAILURE or REVOKED.
        #[arg(long)]
        state: Option<String>,
        /// A kind, or a pattern with `*` at its start or end (`diag.*`).
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        lane: Option<String>,
        /// Finished at or after this time (RFC 3339) or this long ago (15m, 24h).
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// The `next` of an earlier page.
        #[arg(long)]
        after: Option<String>,
    },
    /// Show a task's state, result and attempts.
    Status { task_id: String },
    /// Cancel a queued, retrying or running task.
    Cancel { task_id: String },
}

#[derive(clap::Args)]
struct FilterArgs {
    /// Only this kind.
    #[arg(long)]
    kind: Option<String>,
    /// Only errors containing this text.
    #[arg(long)]
    error: Option<String>,
    /// Only this lane.
    #[arg(long, value_parser = parse_lane)]
    lane: Option<Lane>,
    /// Only letters that died at least this long ago (e.g. 1h).
    #[arg(long, value_parser = parse_duration)]
    older_than: Option<std::time::Duration>,
}

impl From<FilterArgs> for DlqFilter {
    fn from(f: FilterArgs) -> DlqFilter {
        DlqFilter { kind: f.kind, error: f.error, lane: f.lane, older_than: f.older_than }
    }
}

#[derive(Subcommand)]
enum DlqCmd {
    /// List dead letters, newest first.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show one dead letter (by its id or its task's id) with its attempts.
    Show { id: String },
    /// Send dead letters back to their lanes.
    Redrive {
        /// Dead-letter or task ids; or use a filter, or --all.
        ids: Vec<String>,
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long)]
        all: bool,
        /// Show what would be redriven, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete dead letters for good.
    Delete {
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Enqueue N no-op tasks, then drain them through the full engine path.
    Drain {
        #[arg(long, default_value_t = 100_000)]
        tasks: u64,
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// Live-event listeners (Server-Sent Events on an in-process API) following the first
        /// tasks, one each, through the drain.
        #[arg(long, default_value_t = 0)]
        listeners: usize,
    },
    /// Signed, unique Facebook webhooks over HTTP under wrk, against an in-process API.
    Ingest {
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 2)]
        threads: u32,
        #[arg(long, default_value_t = 32)]
        connections: u32,
        /// Serve the same load with a bare handler instead (check the signature, one XADD of the
        /// body, answer 200): what this machine allows, to compare with.
        #[arg(long)]
        ceiling: bool,
    },
    /// Signed Messenger webhooks at a steady rate through the whole flow; report the time from
    /// each webhook's POST to its reply reaching a local Send API stand-in.
    Reply {
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Conversations the messages are spread over (customers of ten pages).
        #[arg(long, default_value_t = 1000)]
        conversations: u64,
    },
    /// A `switchyard serve` child taking webhooks and sending replies at a steady rate for
    /// minutes: a JSON line a minute (its memory, Redis's, the minute's p99, the backlog), then
    /// a summary (every message answered once?).
    Soak {
        #[arg(long, default_value_t = 200)]
        rate: u64,
        #[arg(long, default_value_t = 30)]
        minutes: u64,
        /// Conversations the messages are spread over (customers of ten pages).
        #[arg(long, default_value_t = 1000)]
        conversations: u64,
    },
    /// A `switchyard serve` child under attack: signed webhooks at a steady rate alone, beside
    /// slow connections, and beside unfinished 1 MiB bodies; their latencies, how the slow
    /// connections ended and the child's memory; one JSON line.
    Hostile {
        #[arg(long, default_value_t = 500)]
        rate: u64,
        /// Seconds of webhooks in each phase.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Slow connections (500 per loopback address from 127.0.0.2 up).
        #[arg(long, default_value_t = 5000)]
        slow: usize,
        /// Connections that each send a 1 MiB body but its last byte.
        #[arg(long, default_value_t = 1500)]
        bodies: usize,
    },
    /// Redis bytes per answered message (by key family) and per finished `diag.noop` task, right
    /// after the work is done; one JSON line.
    Memory {
        #[arg(long, default_value_t = 2000)]
        messages: u64,
        #[arg(long, default_value_t = 200)]
        conversations: u64,
        #[arg(long, default_value_t = 10_000)]
        tasks: u64,
    },
    /// Time the dashboard's overview with a lane of N entries and a DLQ of M dead letters.
    Overview {
        #[arg(long, default_value_t = 1_000_000)]
        entries: u64,
        #[arg(long, default_value_t = 100_000)]
        dead: u64,
        #[arg(long, default_value_t = 200)]
        renders: u64,
    },
    /// Enqueue at a steady rate against a running worker; report enqueue-to-start waits.
    Latency {
        #[arg(long, default_value_t = 5000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// Queue every task this long ahead (90s, 500ms): the waits are then how late each
        /// started after its time.
        #[arg(long, value_parser = parse_duration)]
        delay: Option<std::time::Duration>,
    },
}

/// A comma-separated list of lanes, as one argument.
#[derive(Clone)]
struct LaneList(Vec<Lane>);

fn parse_lanes(s: &str) -> Result<LaneList, String> {
    Lane::parse_list(s).map(LaneList)
}

/// A benchmark's report, as one JSON line.
fn print_line(report: impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn parse_lane(s: &str) -> Result<Lane, String> {
    Lane::parse(s).ok_or_else(|| format!("unknown lane `{s}` (lanes: conversations, webhooks, analytics)"))
}

fn parse_time(s: &str) -> Result<u64, String> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.timestamp_millis().max(0) as u64)
        .map_err(|e| format!("`{s}` is not an RFC 3339 time such as 2026-12-24T18:00:00Z ({e})"))
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    switchyard::config::parse_duration_str(s).ok_or_else(|| format!("`{s}` is not a duration such as 30s, 10m or 24h"))
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchyard: {e}");
            std::process::exit(2);
        }
    };
    let traces = telemetry::init_tracing(config.log_format);
    let env: Vec<(String, String)> = std::env::vars().collect();
    for line in switchyard::config::unknown_variables(&env) {
        tracing::warn!("{line}");
    }
    let result = match cli.command {
        Command::Serve { roles, lanes } => app::serve(config, roles, lanes.0).await,
        Command::Check => commands::check(config).await,
        Command::Tasks(TasksCmd::Enqueue { kind, payload, lane, idempotency_key, max_attempts, delay, run_at }) => {
            let spec = TaskSpec {
                lane,
                idempotency_key,
                max_attempts,
                delay,
                run_at_ms: run_at,
                ..TaskSpec::new(kind, serde_json::Value::Null)
            };
            commands::tasks_enqueue(config, spec, payload).await
        }
        Command::Tasks(TasksCmd::Scheduled { lane, limit }) => commands::tasks_scheduled(config, lane, limit).await,
        Command::Tasks(TasksCmd::RunNow { task_id }) => commands::tasks_run_now(config, task_id).await,
        Command::Tasks(TasksCmd::List { state, kind, lane, since, limit, after }) => {
            let words = commands::HistoryWords { state, kind, lane, since, after };
            commands::tasks_list(config, words, limit).await
        }
        Command::Tasks(TasksCmd::Status { task_id }) => commands::tasks_status(config, task_id).await,
        Command::Tasks(TasksCmd::Cancel { task_id }) => commands::tasks_cancel(config, task_id).await,
        Command::Dlq(DlqCmd::List { filter, limit }) => commands::dlq_list(config, filter.into(), limit).await,
        Command::Dlq(DlqCmd::Show { id }) => commands::dlq_show(config, id).await,
        Command::Dlq(DlqCmd::Redrive { ids, filter, all, dry_run }) => {
            commands::dlq_redrive(config, ids, filter.into(), all, dry_run).await
        }
        Command::Dlq(DlqCmd::Delete { ids }) => commands::dlq_delete(config, ids).await,
        Command::Lanes(LanesCmd::List) => commands::lanes_list(config).await,
        Command::Lanes(LanesCmd::Pause { lane }) => commands::lanes_pause(config, &lane, true).await,
        Command::Lanes(LanesCmd::Resume { lane }) => commands::lanes_pause(config, &lane, false).await,
        Command::Bench(BenchCmd::Drain { tasks, concurrency, listeners }) => {
            bench::drain(config, tasks, concurrency, listeners).await.and_then(print_line)
        }
        Command::Bench(BenchCmd::Ingest { seconds, threads, connections, ceiling }) => {
            bench::ingest(config, seconds, threads, connections, ceiling).await.and_then(print_line)
        }
        Command::Bench(BenchCmd::Reply { rate, seconds, conversations }) => {
            bench::reply(config, rate, seconds, conversations).await.and_then(print_line)
        }
        Command::Bench(BenchCmd::Soak { rate, minutes, conversations }) => {
            bench::soak(config, rate, minutes, conversations).await.and_then(print_line)
        }
        Command::Bench(BenchCmd::Hostile { rate, seconds, slow, bodies }) => {
            bench::hostile(config, rate, seconds, slow, bodies).await.and_then(print_line)
        }
        Command::Bench(BenchCmd::Memory { messages, conversations, tasks }) => {
            bench::memory(config, messages, conversations, tasks).await.and_then(print_line)
        }
        Command::Bench(BenchCmd::Overview { entries, dead, renders }) => {
            bench::overview(config, entries, dead, renders).await.and_then(print_line)
        }
        Command::Bench(BenchCmd::Latency { rate, seconds, concurrency, delay }) => {
            bench::latency(config, rate, seconds, concurrency, delay).await.and_then(print_line)
        }
    };
    // The spans still buffered go out before the process ends.
    tokio::task::block_in_place(|| drop(traces));
    if let Err(e) = result {
        eprintln!("switchyard: {e:#}");
        std::process::exit(1);
    }
}
