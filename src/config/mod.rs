//! Settings: defaults in one place, an optional TOML file, then `SWITCHYARD_*` variables.
//!
//! Every setting is validated once at start-up; a bad one stops the process with one clear
//! line naming the setting and the value.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::model::Lane;

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("unknown setting `{0}` (see README for the list)")]
    Unknown(String),
    #[error("setting {name}: {message} (got `{value}`)")]
    Invalid { name: String, value: String, message: String },
}

/// The whole configuration of one Switchyard process.
#[derive(Debug, Clone)]
pub struct Config {
    /// `None` when neither the file nor the environment named a Redis: `serve` may then start a
    /// private `redis-server` if nothing answers at the default address.
    pub redis_url: Option<String>,
    pub listen: String,
    pub key_prefix: String,
    /// Partitions of the deployment's keys over a Redis Cluster's slots (`src/redis/partition.rs`).
    pub partitions: usize,
    pub admin_token: Option<String>,
    pub facebook_app_secret: Option<String>,
    pub facebook_verify_token: Option<String>,
    pub facebook_page_token: Option<String>,
    pub graph_url: String,
    pub whatsapp_token: Option<String>,
    pub google_pubsub_audience: Option<String>,
    pub google_pubsub_service_account: Option<String>,
    pub google_jwks: String,
    pub google_rbm_client_token: Option<String>,
    pub rbm_url: String,
    pub rbm_token: Option<String>,
    pub generic_secrets: BTreeMap<String, String>,
    pub llm_url: Option<String>,
    pub llm_api_key: Option<String>,
    pub llm_model: String,
    /// How long the LLM may take before the built-in responder answers instead.
    pub llm_timeout: Duration,
    /// Tasks one worker process runs at once, all lanes together.
    pub concurrency: usize,
    pub concurrency_conversations: usize,
    pub concurrency_webhooks: usize,
    pub concurrency_analytics: usize,
    /// How long a lower lane may go unserved while higher lanes keep the worker busy.
    pub priority_aging: Duration,
    pub max_retries: u32,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    pub visibility_timeout: Duration,
    pub soft_time_limit: Duration,
    pub hard_time_limit: Duration,
    /// Entries a lane may hold before producers are refused (0: no limit).
    pub lane_depth_limit: u64,
    pub task_retention: Duration,
    /// How long the record of a task that succeeded is kept; `None`: as long as the others
    /// (`task_retention`). Failures are what operators come back for.
    pub success_retention: Option<Duration>,
    pub conversation_retention: Duration,
    /// Turns kept per conversation: the oldest go as new ones come.
    pub conversation_max_turns: usize,
    pub idempotency_window: Duration,
    pub shutdown_grace: Duration,
    /// Entries the dead-letter queue may hold (0: no cap; nothing is ever dropped silently).
    pub dlq_max: u64,
    /// Finished tasks the history keeps (the latest; 0: none), spread over the partitions.
    pub task_history: u64,
    /// Wrong admin tokens a client address may give in a minute before it is made to wait.
    pub auth_failures_per_minute: u32,
    /// Proxies whose `X-Forwarded-For` names the client (their own address otherwise).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Share of Redis's `maxmemory` past which new work from outside is refused (503).
    pub memory_high_water: f64,
    /// When a producer's write counts as taken: `Local` once the master has it, `Replicated`
    /// once a replica has it too (`WAIT`), so a master's failover cannot drop it.
    pub durability: Durability,
    /// How log lines are written: for people or for log shippers.
    pub log_format: LogFormat,
    /// Which partitions a worker reads new entries from: every one, or a share of them.
    pub worker_partitions: WorkerPartitions,
    /// Schedule name → cron expression with a seconds field, or `off`.
    pub schedules: BTreeMap<String, String>,
    /// How long the scheduler's lease lasts unless renewed: the longest a tick waits when the
    /// process holding it dies.
    pub scheduler_lease: Duration,
    /// Connections the HTTP listener holds open at once, all clients together.
    pub max_connections: usize,
    /// Connections one client address may hold open (trusted proxies excepted).
    pub max_connections_per_client: usize,
    /// How long a request head may take, from its first byte (or the connection opening).
    pub header_read_timeout: Duration,
    /// How long a request body may take, from the end of its head.
    pub body_read_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// How long a request may take to be answered once its head is read (408 past it).
    pub handler_timeout: Duration,
    /// Bytes of request bodies being received at once, all connections together.
    pub body_bytes_in_flight: usize,
    /// On SIGTERM, how long the listener keeps serving (with `/readyz` at 503) before it closes.
    pub shutdown_delay: Duration,
    /// How long connecting to Redis may take.
    pub redis_connect_timeout: Duration,
    /// How long a Redis command may take before it fails (a blocking read: its block time more).
    pub redis_response_timeout: Duration,
}

/// The schedules there are, with their defaults (SPEC §7).
pub const SCHEDULES: &[(&str, &str)] = &[("performance_report", "0 */5 * * * *"), ("cleanup", "0 0 * * * *")];

/// The shortest admin token taken.
pub const MIN_TOKEN: usize = 16;

pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

impl Default for Config {
    fn default() -> Self {
        Config {
            redis_url: None,
            listen: "127.0.0.1:8080".into(),
            key_prefix: "sy".into(),
            partitions: 1,
            admin_token: None,
            facebook_app_secret: None,
            facebook_verify_token: None,
            facebook_page_token: None,
            graph_url: "https://graph.facebook.com/v24.0".into(),
            whatsapp_token: None,
            google_pubsub_audience: None,
            google_pubsub_service_account: None,
            google_jwks: "https://www.googleapis.com/oauth2/v3/certs".into(),
            google_rbm_client_token: None,
            rbm_url: "https://rcsbusinessmessaging.googleapis.com".into(),
            rbm_token: None,
            generic_secrets: BTreeMap::new(),
            llm_url: None,
            llm_api_key: None,
            llm_model: "gpt-4o-mini".into(),
            llm_timeout: Duration::from_secs(8),
            concurrency: 64,
            concurrency_conversations: 64,
            concurrency_webhooks: 64,
            concurrency_analytics: 16,
            priority_aging: Duration::from_secs(2),
            max_retries: 3,
            retry_base: Duration::from_secs(2),
            retry_cap: Duration::from_secs(600),
            visibility_timeout: Duration::from_secs(30),
            soft_time_limit: Duration::from_secs(300),
            hard_time_limit: Duration::from_secs(600),
            lane_depth_limit: 0,
            task_retention: Duration::from_secs(24 * 3600),
            success_retention: None,
            conversation_retention: Duration::from_secs(30 * 24 * 3600),
            conversation_max_turns: 200,
            idempotency_window: Duration::from_secs(24 * 3600),
            shutdown_grace: Duration::from_secs(30),
            dlq_max: 0,
            task_history: 10_000,
            auth_failures_per_minute: 10,
            trusted_proxies: Vec::new(),
            memory_high_water: 0.9,
            durability: Durability::Local,
            log_format: LogFormat::Text,
            worker_partitions: WorkerPartitions::All,
            schedules: SCHEDULES.iter().map(|(n, e)| (n.to_string(), e.to_string())).collect(),
            scheduler_lease: Duration::from_secs(10),
            max_connections: 10_000,
            max_connections_per_client: 1_000,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(75),
            handler_timeout: Duration::from_secs(30),
            body_bytes_in_flight: 64 << 20,
            shutdown_delay: Duration::from_secs(5),
            redis_connect_timeout: Duration::from_secs(2),
            redis_response_timeout: Duration::from_secs(5),
        }
    }
}

/// Where a raw value came from, for error messages.
struct Raw {
    value: String,
    name: String,
}

impl Config {
    /// Defaults, then the file (if any), then the process environment.
    pub fn load(file: Option<&str>) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(file, &env)
    }

    /// As [`Config::load`], with the environment given (tests use this).
    pub fn load_from(file: Option<&str>, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let mut raw: BTreeMap<String, Raw> = BTreeMap::new();
        let mut schedules: Vec<(String, Raw)> = Vec::new();
        if let Some(path) = file {
            let text =
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_string(), source })?;
            let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Parse {
                path: path.to_string(),
                message: e.message().to_string(),
            })?;
            for (key, value) in table {
                let value = match value {
                    toml::Value::String(s) => s,
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    toml::Value::Table(t) if key == "schedules" => {
                        for (name, v) in t {
                            let toml::Value::String(expr) = v else {
                                return Err(ConfigError::Parse {
                                    path: path.to_string(),
                                    message: format!(
                                        "schedule `{name}` must be a string (a cron expression or \"off\")"
                                    ),
                                });
                            };
                            schedules.push((name.clone(), Raw { value: expr, name: format!("schedules.{name}") }));
                        }
                        continue;
                    }
                    _ => {
                        return Err(ConfigError::Parse {
                            path: path.to_string(),
                            message: format!("`{key}` must be a string, number or boolean"),
                        });
                    }
                };
                if !KNOWN.contains(&key.as_str()) {
                    return Err(ConfigError::Unknown(key));
                }
                raw.insert(key.clone(), Raw { value, name: key });
            }
        }
        for (name, value) in env {
            let Some(key) = name.strip_prefix("SWITCHYARD_") else { continue };
            let key = key.to_ascii_lowercase();
            if let Some(schedule) = key.strip_prefix("schedule_") {
                schedules.push((schedule.to_string(), Raw { value: value.clone(), name: name.clone() }));
                continue;
            }
            if KNOWN.contains(&key.as_str()) {
                raw.insert(key, Raw { value: value.clone(), name: name.clone() });
            }
        }
        let mut c = Config::default();
        let mut take = |key: &str| {
            // a setting read here but missing from KNOWN would be dropped from files and the
            // environment without a word
            debug_assert!(KNOWN.contains(&key), "setting `{key}` is not in KNOWN");
            raw.remove(key)
        };
        macro_rules! set_opt {
            ($field:ident) => {
                if let Some(r) = take(stringify!($field)) {
                    c.$field = (!r.value.is_empty()).then_some(r.value);
                }
            };
        }
        macro_rules! set_str {
            ($field:ident) => {
                if let Some(r) = take(stringify!($field)) {
                    c.$field = r.value;
                }
            };
        }
        macro_rules! set_parse {
            ($field:ident, $parse:expr) => {
                if let Some(r) = take(stringify!($field)) {
                    c.$field = $parse(&r)?;
                }
            };
        }
        set_opt!(redis_url);
        set_str!(listen);
        set_str!(key_prefix);
        set_opt!(admin_token);
        set_opt!(facebook_app_secret);
        set_opt!(facebook_verify_token);
        set_opt!(facebook_page_token);
        set_str!(graph_url);
        set_opt!(whatsapp_token);
        set_opt!(google_pubsub_audience);
        set_opt!(google_pubsub_service_account);
        set_str!(google_jwks);
        set_opt!(google_rbm_client_token);
        set_str!(rbm_url);
        set_opt!(rbm_token);
        set_parse!(generic_secrets, parse_secrets);
        set_opt!(llm_url);
        set_opt!(llm_api_key);
        set_str!(llm_model);
        set_parse!(llm_timeout, parse_duration);
        set_parse!(partitions, parse_count);
        set_parse!(concurrency, parse_count);
        set_parse!(concurrency_conversations, parse_count);
        set_parse!(concurrency_webhooks, parse_count);
        set_parse!(concurrency_analytics, parse_count);
        set_parse!(priority_aging, parse_duration);
        set_parse!(max_retries, |r: &Raw| parse_num::<u32>(r));
        set_parse!(retry_base, parse_duration);
        set_parse!(retry_cap, parse_duration);
        set_parse!(visibility_timeout, parse_duration);
        set_parse!(soft_time_limit, parse_duration);
        set_parse!(hard_time_limit, parse_duration);
        set_parse!(lane_depth_limit, |r: &Raw| parse_num::<u64>(r));
        set_parse!(task_retention, parse_duration);
        set_parse!(success_retention, |r: &Raw| parse_duration(r).map(Some));
        set_parse!(conversation_retention, parse_duration);
        set_parse!(conversation_max_turns, parse_count);
        set_parse!(idempotency_window, parse_duration);
        set_parse!(shutdown_grace, parse_duration);
        set_parse!(dlq_max, |r: &Raw| parse_num::<u64>(r));
        set_parse!(task_history, |r: &Raw| parse_num::<u64>(r));
        set_parse!(auth_failures_per_minute, |r: &Raw| parse_count(r).map(|n| n.min(u32::MAX as usize) as u32));
        set_parse!(trusted_proxies, parse_addresses);
        set_parse!(memory_high_water, parse_share);
        set_parse!(durability, parse_durability);
        set_parse!(log_format, parse_log_format);
        set_parse!(worker_partitions, parse_worker_partitions);
        set_parse!(scheduler_lease, parse_duration);
        set_parse!(max_connections, parse_count);
        set_parse!(max_connections_per_client, parse_count);
        set_parse!(header_read_timeout, parse_duration);
        set_parse!(body_read_timeout, parse_duration);
        set_parse!(idle_timeout, parse_duration);
        set_parse!(handler_timeout, parse_duration);
        set_parse!(body_bytes_in_flight, parse_bytes);
        set_parse!(shutdown_delay, parse_duration);
        set_parse!(redis_connect_timeout, parse_duration);
        set_parse!(redis_response_timeout, parse_duration);
        for (name, r) in schedules {
            if !SCHEDULES.iter().any(|(n, _)| *n == name) {
                let known: Vec<&str> = SCHEDULES.iter().map(|(n, _)| *n).collect();
                return Err(invalid(&r, &format!("no schedule named `{name}` (schedules: {})", known.join(", "))));
            }
            let expr = r.value.trim().to_string();
            if !expr.eq_ignore_ascii_case("off") {
                parse_cron(&expr).map_err(|e| invalid(&r, &e))?;
            }
            c.schedules.insert(name, expr);
        }
        c.validate()?;
        Ok(c)
    }

    /// Cross-field checks that a single value cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |name: &str, value: String, message: &str| {
            Err(ConfigError::Invalid { name: name.into(), value, message: message.into() })
        };
        if let Some(token) = &self.admin_token
            && token.chars().count() < MIN_TOKEN
        {
            return bad(
                "ADMIN_TOKEN",
                format!("({} characters)", token.chars().count()),
                &format!("must be at least {MIN_TOKEN} characters (leave it unset for a random one)"),
            );
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(['{', '}', ' ']) {
            return bad("KEY_PREFIX", self.key_prefix.clone(), "must be non-empty, without braces or spaces");
        }
        if !(1..=crate::model::task::MAX_PARTITIONS).contains(&self.partitions) {
            return bad(
                "PARTITIONS",
                self.partitions.to_string(),
                &format!("must be between 1 and {}", crate::model::task::MAX_PARTITIONS),
            );
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad("LISTEN", self.listen.clone(), "must be an address such as 127.0.0.1:8080");
        }
        // Redis takes no expiry of zero: a record kept for no time would fail its write.
        for (name, d) in [
            ("TASK_RETENTION", Some(self.task_retention)),
            ("SUCCESS_RETENTION", self.success_retention),
            ("CONVERSATION_RETENTION", Some(self.conversation_retention)),
        ] {
            if d.is_some_and(|d| d < Duration::from_millis(1)) {
                return bad(name, "0".into(), "must be at least 1ms");
            }
        }
        if let Some(url) = &self.redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("unix://"))
        {
            return bad("REDIS_URL", url.clone(), "must start with redis://, rediss:// or unix://");
        }
        if self.visibility_timeout < Duration::from_millis(300) {
            return bad(
                "VISIBILITY_TIMEOUT",
                humantime::format_duration(self.visibility_timeout).to_string(),
                "must be at least 300ms so live workers can renew their claims in time",
            );
        }
        if self.soft_time_limit > self.hard_time_limit {
            return bad(
                "SOFT_TIME_LIMIT",
                humantime::format_duration(self.soft_time_limit).to_string(),
                "must not exceed HARD_TIME_LIMIT",
            );
        }
        // The key set may be a file: it must be there.
        let jwks_file = !self.google_jwks.contains("://");
        if jwks_file && !std::path::Path::new(&self.google_jwks).is_file() {
            return bad("GOOGLE_JWKS", self.google_jwks.clone(), "is neither an http(s) URL nor a file that exists");
        }
        for (name, url) in [
            ("GRAPH_URL", Some(&self.graph_url)),
            ("RBM_URL", Some(&self.rbm_url)),
            ("GOOGLE_JWKS", (!jwks_file).then_some(&self.google_jwks)),
            ("LLM_URL", self.llm_url.as_ref()),
        ] {
            if let Some(url) = url
                && let Err(message) = check_http_url(url)
            {
                return bad(name, url.clone(), &message);
            }
        }
        for (name, d) in [
            ("HEADER_READ_TIMEOUT", self.header_read_timeout),
            ("BODY_READ_TIMEOUT", self.body_read_timeout),
            ("IDLE_TIMEOUT", self.idle_timeout),
            ("HANDLER_TIMEOUT", self.handler_timeout),
            ("REDIS_CONNECT_TIMEOUT", self.redis_connect_timeout),
            ("REDIS_RESPONSE_TIMEOUT", self.redis_response_timeout),
        ] {
            if d < Duration::from_millis(10) {
                return bad(name, humantime::format_duration(d).to_string(), "must be at least 10ms");
            }
        }
        if self.body_bytes_in_flight < crate::web::BODY_LIMIT {
            return bad(
                "BODY_BYTES_IN_FLIGHT",
                self.body_bytes_in_flight.to_string(),
                &format!("must be at least {} bytes, the largest body taken", crate::web::BODY_LIMIT),
            );
        }
        if self.retry_base > self.retry_cap {
            return bad(
                "RETRY_BASE",
                humantime::format_duration(self.retry_base).to_string(),
                "must not exceed RETRY_CAP",
            );
        }
        Ok(())
    }

    /// The Redis URL to use when none was configured.
    pub fn redis_url_or_default(&self) -> &str {
        self.redis_url.as_deref().unwrap_or(DEFAULT_REDIS_URL)
    }

    /// Concurrency limit of one lane in one worker process.
    pub fn lane_concurrency(&self, lane: Lane) -> usize {
        match lane {
            Lane::Conversations => self.concurrency_conversations,
            Lane::Webhooks => self.concurrency_webhooks,
            Lane::Analytics => self.concurrency_analytics,
        }
    }

    /// How often a live worker renews its claims: well inside the visibility timeout.
    pub fn claim_renewal_interval(&self) -> Duration {
        self.visibility_timeout / 3
    }

    /// Settings for tests: a given Redis and prefix, short timeouts.
    pub fn for_test(redis_url: &str, prefix: &str) -> Config {
        Config {
            redis_url: Some(redis_url.to_string()),
            key_prefix: prefix.to_string(),
            admin_token: Some("test-token-0123456789".into()),
            retry_base: Duration::from_millis(100),
            retry_cap: Duration::from_secs(2),
            visibility_timeout: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(5),
            priority_aging: Duration::from_secs(60),
            ..Config::default()
        }
    }
}

const KNOWN: &[&str] = &[
    "redis_url",
    "listen",
    "key_prefix",
    "admin_token",
    "facebook_app_secret",
    "facebook_verify_token",
    "facebook_page_token",
    "graph_url",
    "whatsapp_token",
    "google_pubsub_audience",
    "google_pubsub_service_account",
    "google_jwks",
    "google_rbm_client_token",
    "rbm_url",
    "rbm_token",
    "generic_secrets",
    "llm_url",
    "llm_api_key",
    "llm_model",
    "llm_timeout",
    "partitions",
    "concurrency",
    "concurrency_conversations",
    "concurrency_webhooks",
    "concurrency_analytics",
    "priority_aging",
    "max_retries",
    "retry_base",
    "retry_cap",
    "visibility_timeout",
    "soft_time_limit",
    "hard_time_limit",
    "lane_depth_limit",
    "task_retention",
    "success_retention",
    "conversation_retention",
    "conversation_max_turns",
    "idempotency_window",
    "shutdown_grace",
    "dlq_max",
    "task_history",
    "auth_failures_per_minute",
    "trusted_proxies",
    "memory_high_water",
    "durability",
    "log_format",
    "worker_partitions",
    "scheduler_lease",
    "max_connections",
    "max_connections_per_client",
    "header_read_timeout",
    "body_read_timeout",
    "idle_timeout",
    "handler_timeout",
    "body_bytes_in_flight",
    "shutdown_delay",
    "redis_connect_timeout",
    "redis_response_timeout",
];

/// `SWITCHYARD_*` variables that are not settings, with what they are.
const NOT_SETTINGS: &[&str] = &["SWITCHYARD_CONFIG", "SWITCHYARD_TOOLS_DIR"];

/// One line for each `SWITCHYARD_*` variable in `env` that names no setting (a misspelt
/// secret's name would otherwise leave the secret unset without a word), with the setting
/// it is closest to.
pub fn unknown_variables(env: &[(String, String)]) -> Vec<String> {
    let mut lines = Vec::new();
    for (name, _) in env {
        let Some(key) = name.strip_prefix("SWITCHYARD_") else { continue };
        let key = key.to_ascii_lowercase();
        if KNOWN.contains(&key.as_str())
            || key.starts_with("schedule_")
            || key.starts_with("test_")
            || NOT_SETTINGS.contains(&name.as_str())
        {
            continue;
        }
        let closest = KNOWN
            .iter()
            .map(|k| (strsim::levenshtein(k, &key), k))
            .min()
            .filter(|(d, _)| *d <= 3)
            .map(|(_, k)| format!("; did you mean SWITCHYARD_{}?", k.to_ascii_uppercase()))
            .unwrap_or_default();
        lines.push(format!("{name} names no setting and is ignored{closest}"));
    }
    lines
}

/// An `http://` or `https://` URL with a host, as the outbound clients need.
fn check_http_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("is not a URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL".into());
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("must name a host".into());
    }
    Ok(())
}

fn invalid(r: &Raw, message: &str) -> ConfigError {
    ConfigError::Invalid { name: r.name.clone(), value: r.value.clone(), message: message.into() }
}

fn parse_num<T: std::str::FromStr>(r: &Raw) -> Result<T, ConfigError> {
    r.value.trim().parse().map_err(|_| invalid(r, "must be a whole number"))
}

/// `DURABILITY`: when a webhook's 2xx and a task's 202 are given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Once the master holds the write.
    Local,
    /// Once a replica holds it too.
    Replicated,
}

fn parse_durability(r: &Raw) -> Result<Durability, ConfigError> {
    match r.value.trim() {
        "local" => Ok(Durability::Local),
        "replicated" => Ok(Durability::Replicated),
        _ => Err(invalid(r, "must be local or replicated")),
    }
}

/// `LOG_FORMAT`: how log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One line per event for people (colours only on a terminal).
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

fn parse_log_format(r: &Raw) -> Result<LogFormat, ConfigError> {
    match r.value.trim() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(invalid(r, "must be text or json")),
    }
}

/// `WORKER_PARTITIONS`: which partitions a worker reads new entries from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerPartitions {
    /// Every partition: the fewest waits for a task, one blocking read per partition when idle.
    All,
    /// A balanced share, worked out from the workers' heartbeats (each partition read by at
    /// least one worker), with a slower sweep over every partition for retries and the tasks
    /// of workers that died: for fleets of many workers.
    Balanced,
}

fn parse_worker_partitions(r: &Raw) -> Result<WorkerPartitions, ConfigError> {
    match r.value.trim() {
        "all" => Ok(WorkerPartitions::All),
        "balanced" => Ok(WorkerPartitions::Balanced),
        _ => Err(invalid(r, "must be all or balanced")),
    }
}

/// A share written `90%` or `0.9`, above 0 and at most the whole.
fn parse_share(r: &Raw) -> Result<f64, ConfigError> {
    let v = r.value.trim();
    let share = match v.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
        None => v.parse::<f64>(),
    };
    match share {
        Ok(s) if s > 0.0 && s <= 1.0 => Ok(s),
        _ => Err(invalid(r, "must be a share such as 90% or 0.9, above 0 and at most 100%")),
    }
}

/// A size in bytes: `65536`, `64KiB`, `64MiB`, `1GiB` (KB, MB and GB read the same).
fn parse_bytes(r: &Raw) -> Result<usize, ConfigError> {
    let v = r.value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let scale: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(invalid(r, "must be a size such as 65536, 64KiB, 64MiB or 1GiB")),
    };
    match digits.parse::<usize>().ok().and_then(|n| n.checked_mul(scale)) {
        Some(n) if n > 0 => Ok(n),
        _ => Err(invalid(r, "must be a size above 0 such as 65536, 64KiB, 64MiB or 1GiB")),
    }
}

fn parse_count(r: &Raw) -> Result<usize, ConfigError> {
    match r.value.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(invalid(r, "must be a whole number above 0")),
    }
}

/// Durations are written `500ms`, `30s`, `10m`, `24h`, `30d`.
pub fn parse_duration_str(s: &str) -> Option<Duration> {
    humantime::parse_duration(s.trim()).ok()
}

fn parse_duration(r: &Raw) -> Result<Duration, ConfigError> {
    parse_duration_str(&r.value).ok_or_else(|| invalid(r, "must be a duration such as 500ms, 30s, 10m, 24h or 30d"))
}

/// IP addresses separated by commas.
fn parse_addresses(r: &Raw) -> Result<Vec<std::net::IpAddr>, ConfigError> {
    r.value
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.parse()
                .map_err(|_| invalid(r, &format!("`{a}` is not an IP address (give addresses separated by commas)")))
        })
        .collect()
}

fn parse_secrets(r: &Raw) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for pair in r.value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((source, secret)) if !source.is_empty() && !secret.is_empty() => {
                out.insert(source.trim().to_string(), secret.trim().to_string());
            }
            _ => return Err(invalid(r, "must be source=secret pairs separated by commas")),
        }
    }
    Ok(out)
}

/// A cron expression with a seconds field: `sec min hour day-of-month month day-of-week [year]`.
pub fn parse_cron(expr: &str) -> Result<cron::Schedule, String> {
    let fields = expr.split_whitespace().count();
    if fields == 5 {
        return Err(format!(
            "`{expr}` has no seconds field; write it with one, e.g. `0 {expr}` (sec min hour day month weekday)"
        ));
    }
    expr.parse::<cron::Schedule>().map_err(|e| format!("`{expr}` is not a cron expression: {e}"))
}

#[cfg(test)]
mod tests;
