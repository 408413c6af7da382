//! Reading settings: defaults, the environment, files, and the errors a bad value gets.

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn defaults_hold_without_any_setting() {
    let c = Config::load_from(None, &[]).unwrap();
    assert_eq!(c.key_prefix, "sy");
    assert_eq!(c.max_retries, 3);
    assert_eq!(c.visibility_timeout, Duration::from_secs(30));
    assert_eq!(c.redis_url_or_default(), DEFAULT_REDIS_URL);
}

#[test]
fn environment_overrides_and_durations_parse() {
    let c = Config::load_from(
        None,
        &env(&[
            ("SWITCHYARD_RETRY_BASE", "500ms"),
            ("SWITCHYARD_TASK_RETENTION", "30d"),
            ("SWITCHYARD_GENERIC_SECRETS", "crm=abc, shop=def"),
            ("SWITCHYARD_CONCURRENCY_WEBHOOKS", "7"),
            ("SWITCHYARD_TASK_HISTORY", "0"),
            ("SWITCHYARD_AUTH_FAILURES_PER_MINUTE", "3"),
            ("SWITCHYARD_TRUSTED_PROXIES", "10.0.0.2, ::1"),
        ]),
    )
    .unwrap();
    assert_eq!(c.task_history, 0);
    assert_eq!(c.auth_failures_per_minute, 3);
    assert_eq!(c.trusted_proxies, ["10.0.0.2".parse::<std::net::IpAddr>().unwrap(), "::1".parse().unwrap()]);
    assert_eq!(c.retry_base, Duration::from_millis(500));
    assert_eq!(c.task_retention, Duration::from_secs(30 * 86400));
    assert_eq!(c.generic_secrets.get("shop").map(String::as_str), Some("def"));
    assert_eq!(c.concurrency_webhooks, 7);
}

#[test]
fn a_short_admin_token_or_a_bad_proxy_address_stops_start_up() {
    let err = Config::load_from(None, &env(&[("SWITCHYARD_ADMIN_TOKEN", "hunter2")])).unwrap_err().to_string();
    assert!(err.contains("ADMIN_TOKEN") && err.contains("at least 16 characters"), "{err}");
    assert!(!err.contains("hunter2"), "the token is not written out: {err}");
    assert!(Config::load_from(None, &env(&[("SWITCHYARD_ADMIN_TOKEN", "0123456789abcdef")])).is_ok());
    let err = Config::load_from(None, &env(&[("SWITCHYARD_TRUSTED_PROXIES", "10.0.0.2, proxy.local")])).unwrap_err();
    assert!(err.to_string().contains("`proxy.local` is not an IP address"), "{err}");
}

#[test]
fn a_bad_value_names_the_setting() {
    let err = Config::load_from(None, &env(&[("SWITCHYARD_VISIBILITY_TIMEOUT", "soon")])).unwrap_err();
    let line = err.to_string();
    assert!(line.contains("SWITCHYARD_VISIBILITY_TIMEOUT") && line.contains("soon"), "{line}");
    let err = Config::load_from(None, &env(&[("SWITCHYARD_CONCURRENCY", "0")])).unwrap_err();
    assert!(err.to_string().contains("above 0"));
    let c = Config::load_from(None, &env(&[("SWITCHYARD_PARTITIONS", "12")])).unwrap();
    assert_eq!(c.partitions, 12);
    let err = Config::load_from(None, &env(&[("SWITCHYARD_PARTITIONS", "2000")])).unwrap_err();
    assert!(err.to_string().contains("PARTITIONS") && err.to_string().contains("1024"), "{err}");
}

#[test]
fn schedules_come_from_the_environment_with_defaults() {
    let c = Config::load_from(None, &env(&[])).unwrap();
    assert_eq!(c.schedules["performance_report"], "0 */5 * * * *");
    assert_eq!(c.schedules["cleanup"], "0 0 * * * *");
    let c = Config::load_from(
        None,
        &env(&[("SWITCHYARD_SCHEDULE_CLEANUP", "off"), ("SWITCHYARD_SCHEDULE_PERFORMANCE_REPORT", "0 * * * * *")]),
    )
    .unwrap();
    assert_eq!((c.schedules["cleanup"].as_str(), c.schedules["performance_report"].as_str()), ("off", "0 * * * * *"));
    let err = Config::load_from(None, &env(&[("SWITCHYARD_SCHEDULE_CLEANUP", "*/5 * * * *")])).unwrap_err().to_string();
    assert!(err.contains("SWITCHYARD_SCHEDULE_CLEANUP") && err.contains("seconds field"), "{err}");
    let err = Config::load_from(None, &env(&[("SWITCHYARD_SCHEDULE_BACKUP", "0 * * * * *")])).unwrap_err().to_string();
    assert!(err.contains("no schedule named `backup`"), "{err}");
}

#[test]
fn file_keys_are_checked() {
    let dir = std::env::temp_dir().join(format!("sy-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "listen = \"127.0.0.1:9000\"\nmax_retrys = 2\n").unwrap();
    let err = Config::load_from(path.to_str(), &[]).unwrap_err();
    assert!(matches!(err, ConfigError::Unknown(ref k) if k == "max_retrys"));
    std::fs::write(&path, "listen = \"127.0.0.1:9000\"\nmax_retries = 5\n").unwrap();
    let c = Config::load_from(path.to_str(), &[]).unwrap();
    assert_eq!((c.listen.as_str(), c.max_retries), ("127.0.0.1:9000", 5));
}

#[test]
fn sizes_and_front_door_settings_parse() {
    let c = Config::load_from(
        None,
        &env(&[
            ("SWITCHYARD_BODY_BYTES_IN_FLIGHT", "16MiB"),
            ("SWITCHYARD_MAX_CONNECTIONS_PER_CLIENT", "20"),
            ("SWITCHYARD_IDLE_TIMEOUT", "2m"),
            ("SWITCHYARD_REDIS_RESPONSE_TIMEOUT", "750ms"),
        ]),
    )
    .unwrap();
    assert_eq!(c.body_bytes_in_flight, 16 << 20);
    assert_eq!(c.max_connections_per_client, 20);
    assert_eq!(c.idle_timeout, Duration::from_secs(120));
    assert_eq!(c.redis_response_timeout, Duration::from_millis(750));
    for (given, bytes) in [("2097152", 2 << 20), ("2048 KiB", 2 << 20), ("1gb", 1 << 30)] {
        let c = Config::load_from(None, &env(&[("SWITCHYARD_BODY_BYTES_IN_FLIGHT", given)])).unwrap();
        assert_eq!(c.body_bytes_in_flight, bytes, "{given}");
    }
    for bad in ["lots", "12 parsecs", "-5MiB"] {
        let err = Config::load_from(None, &env(&[("SWITCHYARD_BODY_BYTES_IN_FLIGHT", bad)])).unwrap_err();
        assert!(err.to_string().contains("must be a size"), "{bad}: {err}");
    }
}

#[test]
fn variables_that_name_no_setting_are_listed_with_the_closest() {
    let lines = unknown_variables(&env(&[
        ("SWITCHYARD_REDIS_URL", "redis://x"),
        ("SWITCHYARD_SCHEDULE_CLEANUP", "off"),
        ("SWITCHYARD_CONFIG", "/etc/switchyard.toml"),
        ("SWITCHYARD_TEST_REDIS_URL", "redis://y"),
        ("SWITCHYARD_WHATSAP_TOKEN", "secret"),
        ("SWITCHYARD_COLOUR", "blue"),
        ("HOME", "/root"),
    ]));
    assert_eq!(
        lines,
        [
            "SWITCHYARD_WHATSAP_TOKEN names no setting and is ignored; did you mean SWITCHYARD_WHATSAPP_TOKEN?",
            "SWITCHYARD_COLOUR names no setting and is ignored",
        ]
    );
}
