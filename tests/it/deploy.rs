//! The systemd unit (README "Deploying: systemd"): `systemd-analyze
//! verify` accepts it, with and without the port-53 drop-in, `systemd-analyze
//! security` rates it well, and the binary starts with the unit's own
//! `ExecStart` arguments and keeps its database in the state directory.
//!
//! `systemd-analyze` comes with Debian's `systemd` package; without it
//! these tests fail, never skip.

use std::path::Path;
use std::process::Command;

use crate::support::{Process, Registration, ScratchDir};

const SYSTEMD_ANALYZE: &str = "/usr/bin/systemd-analyze";
const UNIT: &str = include_str!("../../contrib/systemd/signpost.service");
const PORT_53: &str = include_str!("../../contrib/systemd/port-53.conf");

/// A root directory for `systemd-analyze --root`: the system's own units
/// (the targets the unit names), the unit, optionally the drop-in, and an
/// executable where `ExecStart` looks for signpost.
fn root_with_unit(drop_in: bool) -> ScratchDir {
    assert!(
        Path::new(SYSTEMD_ANALYZE).exists(),
        "the systemd unit tests need {SYSTEMD_ANALYZE}: apt-get install systemd"
    );
    let root = ScratchDir::new("systemd-root");
    let units = root.path().join("usr/lib/systemd");
    std::fs::create_dir_all(&units).unwrap();
    let copied = Command::new("cp")
        .args(["-r", "/usr/lib/systemd/system"])
        .arg(&units)
        .status()
        .unwrap();
    assert!(copied.success(), "copying the system's units");
    let etc = root.path().join("etc/systemd/system");
    std::fs::create_dir_all(etc.join("signpost.service.d")).unwrap();
    std::fs::write(etc.join("signpost.service"), UNIT).unwrap();
    if drop_in {
        std::fs::write(etc.join("signpost.service.d/port-53.conf"), PORT_53).unwrap();
    }
    let bin = root.path().join("usr/local/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("signpost"), "#!/bin/sh\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("signpost"), std::fs::Permissions::from_mode(0o755)).unwrap();
    root
}

fn analyze(root: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new(SYSTEMD_ANALYZE)
        .args(args)
        .arg(format!("--root={}", root.display()))
        .output()
        .expect("systemd-analyze runs");
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn systemd_analyze_verify_accepts_the_unit_and_its_port_53_drop_in() {
    for drop_in in [false, true] {
        let root = root_with_unit(drop_in);
        let unit = root.path().join("etc/systemd/system/signpost.service");
        let (ok, said) = analyze(root.path(), &["verify", unit.to_str().unwrap()]);
        assert!(
            ok && said.trim().is_empty(),
            "systemd-analyze verify (drop-in: {drop_in}): {said}"
        );
    }
}

#[test]
fn the_unit_is_hardened() {
    let root = root_with_unit(false);
    let (_, said) = analyze(
        root.path(),
        &["security", "--offline=true", "signpost.service"],
    );
    let exposure: f64 = said
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for signpost.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("an exposure level: {said}"));
    // 0 is a sandbox with no network, 10 no protection at all; a network
    // server cannot go below about 1.
    assert!(exposure <= 1.5, "exposure {exposure}: {said}");
    for setting in [
        "DynamicUser=yes",
        "StateDirectory=signpost",
        "CapabilityBoundingSet=\n",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ] {
        assert!(UNIT.contains(setting), "the unit sets {setting:?}");
    }
    assert!(
        !UNIT.contains("CAP_NET_BIND_SERVICE\n") && PORT_53.contains("CAP_NET_BIND_SERVICE\n"),
        "the capability to bind port 53 comes only with the drop-in"
    );
}

/// The unit's `ExecStart`, with `%S` (/var/lib) and /etc/signpost made
/// local, starts signpost, whose database is then in the state directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_units_command_line_starts_signpost_with_its_database_in_the_state_directory() {
    let exec = UNIT
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let state = ScratchDir::new("systemd-state");
    // What StateDirectory= makes before the start.
    std::fs::create_dir_all(state.path().join("signpost")).unwrap();
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config/signpost.toml");
    let line = exec
        .replace("%S", &state.path().display().to_string())
        .replace("/etc/signpost/signpost.toml", config);
    let mut words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words.remove(0), "/usr/local/bin/signpost");
    words.extend([
        "--dns-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    let mut signpost = Process::start(&words).await;
    let registration = Registration::new("web-1", "web", "10.0.0.1", 80);
    signpost.register(&registration).await;
    let database = state.path().join("signpost/signpost.db");
    assert!(database.exists(), "{} exists", database.display());
    assert_eq!(
        signpost.signal("TERM").await,
        Some(0),
        "{}",
        signpost.logs()
    );
}
