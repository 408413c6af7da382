//! The files an operator deploys with, checked by the real tools: `docker-compose.yml` by
//! `docker-compose config`, Prometheus's configuration (with the alert rules it loads) by
//! `promtool check config`, and the systemd unit by `systemd-analyze verify` and its sandbox by
//! `systemd-analyze security`. `make test` installs the tools (`scripts/setup.sh`).

use std::process::Command;

/// A command the project's setup installs, or a clear failure saying how to get it.
fn tool(name: &str) -> String {
    let found = Command::new("sh").args(["-c", &format!("command -v {name}")]).output().expect("sh runs");
    assert!(
        found.status.success(),
        "no {name} on PATH: `make test` installs it (scripts/setup.sh {name}), or apt-get install {}",
        if name == "systemd-analyze" { "systemd" } else { name }
    );
    String::from_utf8(found.stdout).unwrap().trim().to_string()
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("the tool runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn the_compose_file_is_valid_and_mounts_what_prometheus_loads() {
    let (ok, text) = run(Command::new(tool("docker-compose")).args(["-f", "docker-compose.yml", "config"]));
    assert!(ok, "docker-compose config: {text}");
    // Prometheus reads its rules at the path prometheus.yml names; the compose file mounts them
    // there.
    let prometheus = std::fs::read_to_string("grafana/prometheus.yml").unwrap();
    assert!(prometheus.contains("- /etc/prometheus/alerts.yml"), "{prometheus}");
    assert!(
        text.contains("grafana/alerts.yml:/etc/prometheus/alerts.yml:ro"),
        "alerts.yml is not mounted where prometheus.yml reads it:\n{text}"
    );
}

#[test]
fn prometheus_config_and_its_alert_rules_are_valid() {
    let out = Command::new("scripts/tools.sh").arg("promtool").output().expect("scripts/tools.sh runs");
    assert!(out.status.success(), "scripts/tools.sh promtool: {}", String::from_utf8_lossy(&out.stderr));
    let promtool = String::from_utf8(out.stdout).unwrap().trim().to_string();
    // The rules as the file names them in the container, read from the repository here.
    let here = std::env::current_dir().unwrap().join("grafana/alerts.yml");
    let config = std::fs::read_to_string("grafana/prometheus.yml")
        .unwrap()
        .replace("/etc/prometheus/alerts.yml", here.to_str().unwrap());
    let path = std::env::temp_dir().join(format!("switchyard-prometheus-{}.yml", std::process::id()));
    std::fs::write(&path, config).unwrap();
    let (ok, text) = run(Command::new(promtool).args(["check", "config"]).arg(&path));
    let _ = std::fs::remove_file(&path);
    assert!(ok && text.contains("SUCCESS: 1 rule files found"), "promtool check config: {text}");
}

#[test]
fn the_systemd_unit_verifies_and_its_sandbox_rates_ok() {
    let analyze = tool("systemd-analyze");
    // The unit as installed, its ExecStart pointing at the binary built here.
    let unit = std::fs::read_to_string("deploy/switchyard.service")
        .unwrap()
        .replace("ExecStart=/usr/local/bin/switchyard", &format!("ExecStart={}", env!("CARGO_BIN_EXE_switchyard")));
    let dir = std::env::temp_dir().join(format!("switchyard-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("switchyard.service");
    std::fs::write(&path, unit).unwrap();
    let (ok, text) = run(Command::new(&analyze).arg("verify").arg(&path));
    assert!(ok && text.trim().is_empty(), "systemd-analyze verify: {text}");
    let (_, text) = run(Command::new(&analyze).args(["security", "--offline=yes"]).arg(&path));
    let _ = std::fs::remove_dir_all(&dir);
    // "→ Overall exposure level for switchyard.service: 1.4 OK 🙂"; 10 is a unit without any.
    let exposure: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for switchyard.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"));
    assert!(exposure <= 2.0, "the unit's sandbox is looser than systemd rates OK (≤ 2.0): {exposure}\n{text}");
}
