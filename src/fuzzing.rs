//! The checks the fuzz targets in `fuzz/` run, here so that the normal
//! tests replay every file of their corpus (`fuzz/corpus/<target>/`)
//! through the very same code, on stable and without cargo-fuzz.
//!
//! Built only for tests and with the `fuzzing` feature (which `fuzz/`
//! turns on); the normal build has none of it. Each function panics on
//! anything it finds wrong, as a fuzz target must.

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use hickory_proto::rr::Name;
use uuid::Uuid;

use crate::admin::{ApiError, registration_from_body};
use crate::service::{
    Health, Instance, MAX_METADATA, MAX_TAGS, MAX_TTL, ValidRegistration, validate_host,
    validate_label,
};

/// Any bytes, as a DNS query packet from a client, to a fixed registry of
/// varied instances (`dns::differential::fuzz_fixture`): over UDP and TCP,
/// before and after some lifetimes lapse, each path's reply must parse
/// whole, keep the id, opcode and RD, fit the size limit and echo the
/// question; and wherever the fast path answers, the general (hickory)
/// path must send the same records.
pub fn dns_responder(packet: &[u8]) {
    crate::dns::differential::check_packet(packet);
}

/// `ttl` of a registration that names none (the shipped default).
const DEFAULT_TTL: u32 = 30;

/// Any bytes, as the body of `POST /v1/services` with `Content-Type:
/// application/json`: never a panic; either a 400 or 422 with a message,
/// or a registration that keeps every rule, whose DNS forms decode, and
/// whose service object, sent back as a body, gives the same instance.
pub fn registration_body(body: &[u8]) {
    match registration_from_body(&json_headers(), body, DEFAULT_TTL) {
        Err(error) => check_refusal(error),
        Ok(spec) => {
            check_rules(&spec);
            check_round_trip(spec);
        }
    }
}

fn json_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers
}

/// A refused body is a client error that says why.
fn check_refusal(error: ApiError) {
    let message = error.to_string();
    let status = error.into_response().status();
    assert!(
        matches!(
            status,
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY
        ),
        "{status}: {message}"
    );
    assert!(!message.trim().is_empty(), "{status} without a message");
}

/// Every rule of `Registration::validate`, checked again on its result:
/// labels valid and lowercase, the host as validation gives it, numbers in
/// range, tags unique, metadata that fits TXT strings.
fn check_rules(spec: &ValidRegistration) {
    let labels = [("name", &spec.name), ("type", &spec.service_type)]
        .into_iter()
        .chain(spec.tags.iter().map(|tag| ("tags", tag)))
        .chain(spec.locality.iter().map(|locality| ("locality", locality)));
    for (field, label) in labels {
        assert_eq!(validate_label(field, label).as_ref(), Ok(label), "{field}");
    }
    assert_eq!(validate_host(&spec.host.to_string()), Ok(spec.host.clone()));
    assert!(spec.port >= 1, "port {}", spec.port);
    assert!((1..=MAX_TTL).contains(&spec.ttl), "ttl {}", spec.ttl);
    assert!(spec.tags.len() <= MAX_TAGS);
    for (at, tag) in spec.tags.iter().enumerate() {
        assert!(!spec.tags[..at].contains(tag), "tag {tag:?} twice");
    }
    assert!(spec.metadata.len() <= MAX_METADATA);
    for (key, value) in &spec.metadata {
        assert!(
            !key.is_empty() && !key.contains('='),
            "metadata key {key:?}"
        );
        assert!(key.len() + 1 + value.len() <= 255, "metadata {key:?}");
    }
}

/// The longest zone allowed (`dns::MAX_ZONE_CHARS`), so that an instance's
/// names are as long as they can be.
fn longest_zone() -> Vec<u8> {
    let zone = format!("{}.{}.", "a".repeat(60), "b".repeat(59));
    assert_eq!(zone.len() - 1, crate::dns::MAX_ZONE_CHARS);
    crate::names::to_wire(&Name::from_ascii(zone).unwrap())
}

/// The instance `spec` makes: its SRV target and TXT data decode to what
/// the registration says, and its service object, sent back as a body,
/// makes the same instance.
fn check_round_trip(spec: ValidRegistration) {
    const AT_MS: u64 = 1_800_000_000_000;
    let zone = longest_zone();
    let instance = |spec| Instance::new(Uuid::nil(), 1, spec, &zone, AT_MS, AT_MS, Health::Passing);
    let first = instance(spec);
    let target = first.srv_target().to_ascii();
    let expected = match &first.spec.host {
        crate::service::Host::Ip(_) => format!("{}.{}.", first.spec.name, first.spec.service_type),
        crate::service::Host::Name(host) => format!("{host}."),
    };
    assert!(target.starts_with(&expected), "SRV target {target}");
    let txt: Vec<Vec<u8>> = first.txt().txt_data.iter().map(|s| s.to_vec()).collect();
    let pairs: Vec<Vec<u8>> = first
        .spec
        .metadata
        .iter()
        .map(|(key, value)| format!("{key}={value}").into_bytes())
        .collect();
    if pairs.is_empty() {
        assert_eq!(txt, vec![Vec::<u8>::new()], "TXT of no metadata");
    } else {
        assert_eq!(txt, pairs, "TXT");
    }
    let view = first.view();
    let json = serde_json::to_vec(&view).unwrap();
    let again = registration_from_body(&json_headers(), &json, DEFAULT_TTL).unwrap_or_else(|e| {
        panic!(
            "the service object is refused back: {e}\n{}",
            String::from_utf8_lossy(&json)
        )
    });
    assert_eq!(instance(again).view(), view, "the service object sent back");
}

#[cfg(test)]
mod tests {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::path::{Path, PathBuf};

    use super::*;

    fn corpus_dir(target: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target)
    }

    /// Runs `check` on every file of `target`'s corpus; fails naming each
    /// file it panicked on.
    fn replay(target: &str, check: fn(&[u8])) -> usize {
        let dir = corpus_dir(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        let failed: Vec<String> = files
            .iter()
            .filter(|path| {
                let bytes = std::fs::read(path).unwrap();
                catch_unwind(AssertUnwindSafe(|| check(&bytes))).is_err()
            })
            .map(|path| path.display().to_string())
            .collect();
        assert!(
            failed.is_empty(),
            "{target} fails on:\n{}",
            failed.join("\n")
        );
        files.len()
    }

    #[test]
    fn the_dns_responder_corpus_replays() {
        let files = replay("dns_responder", dns_responder);
        assert!(files > 100, "only {files} files");
    }

    #[test]
    fn the_registration_body_corpus_replays() {
        let files = replay("registration_body", registration_body);
        assert!(files > 50, "only {files} files");
    }

    /// The seeds the fuzzing started from (questions of every form about
    /// the fuzz registry, and registration bodies) pass the same checks as
    /// the corpus. With `SIGNPOST_WRITE_SEED_CORPUS=1` they are also
    /// written into `fuzz/corpus/`, to start a fresh corpus from them.
    #[test]
    fn the_seed_corpus_passes_and_can_be_written() {
        for packet in crate::dns::differential::seed_queries(400) {
            dns_responder(&packet);
        }
        for body in SEED_BODIES {
            registration_body(body.as_bytes());
        }
        if std::env::var_os("SIGNPOST_WRITE_SEED_CORPUS").is_some() {
            write_seed_corpus();
        }
    }

    fn write_seed_corpus() {
        let dns = corpus_dir("dns_responder");
        std::fs::create_dir_all(&dns).unwrap();
        for (n, packet) in crate::dns::differential::seed_queries(400)
            .iter()
            .enumerate()
        {
            std::fs::write(dns.join(format!("seed-{n:04}")), packet).unwrap();
        }
        let bodies = corpus_dir("registration_body");
        std::fs::create_dir_all(&bodies).unwrap();
        for (n, body) in SEED_BODIES.iter().enumerate() {
            std::fs::write(bodies.join(format!("seed-{n:04}")), body).unwrap();
        }
    }

    const SEED_BODIES: &[&str] = &[
        r#"{"name":"web-1","type":"web","host":"10.0.0.1","port":8080}"#,
        r#"{"name":"Web-1","type":"WEB","host":"Db.Example.com.","port":1,"ttl":86400}"#,
        r#"{"name":"a","type":"b","host":"::1","port":65535,"tags":["api","API","v6"],"priority":0,"weight":0}"#,
        r#"{"name":"a","type":"b","host":"fe80::1%eth0","port":80}"#,
        r#"{"name":"a","type":"b","host":"0x7f.1","port":80}"#,
        r#"{"name":"a","type":"b","host":"10.0.0.1","port":80,"metadata":{"version":"1.2","a":"","zone":"x=y"}}"#,
        r#"{"name":"a","type":"b","host":"10.0.0.1","port":80,"locality":"eu-west-1a"}"#,
        r#"{"name":"a","type":"b","host":"10.0.0.1","port":80,"check":{"http":"http://10.0.0.1:8080/health?x=1","interval":0.5,"timeout":0.25,"failures_before_critical":3,"successes_before_passing":2,"deregister_after":60}}"#,
        r#"{"name":"a","type":"b","host":"10.0.0.1","port":80,"check":{"http":"https://[::1]:8443/","tls_skip_verify":true}}"#,
        r#"{"name":"a","type":"b","host":"10.0.0.1","port":80,"check":{"tcp":"[::1]:5432","interval":1e1}}"#,
        r#"{"name":"a","type":"b","host":"10.0.0.1","port":80,"check":{"tcp":"db.example:5432"}}"#,
        r#"{"id":"00000000-0000-0000-0000-000000000000","name":"a","type":"b","host":"10.0.0.1","port":80,"tags":[],"metadata":{},"ttl":30,"priority":0,"weight":1,"registered_at":1.5,"last_heartbeat":1.5,"expires_at":31.5,"health":"passing","output":"ok","check_health":"passing","check_output":"200 OK"}"#,
        r#"{"name":"a","type":"b","host":"10.0.0.1","port":0}"#,
        r#"{"name":"a","type":"b","host":"10.0.0.1","port":"80"}"#,
        r#"{"name":"a","type":"b","host":"10.0.0.1","port":80,"nmae":"x"}"#,
        r#"{"name":"a","type":"b","host":"10.0.0.1","port":80.5}"#,
        r#"{"name":"a","type":"b","host":"10.0.0.1","port":80,"ttl":-1}"#,
        r#"{"name":"a","type":"b","host":"10.0.0.1","port":80,"check":{"http":"ftp://x"}}"#,
        r#"{"name":"a","type":"b","host":"10.0.0.1","port":80,"check":{"http":"http://u:p@x/"}}"#,
        r#"{"name":"a","type":"b","host":"10.0.0.1","port":80,"check":{"interval":1}}"#,
        r#"{"name":"a","type":"b","host":"10.0.0.1","port":80,"metadata":{"":"x","a=b":"c"}}"#,
        r#"{"name":"\u00e9","type":"b","host":"10.0.0.1","port":80}"#,
        r#"{"name":"a","type":"b","host":"10.0.0.1","port":80}}"#,
        r#"["a","b","10.0.0.1",80]"#,
        r#"  {"name" : "a" , "type" : "b" , "host" : "h" , "port" : 1 }  "#,
        r#"{"name":"a","type":"b","host":"10.0.0.1","port":80,"health":{"nested":[1,2,{"x":null}]}}"#,
        "null",
        "",
        "{",
        "\u{feff}{}",
    ];
}
