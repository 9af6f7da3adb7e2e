//! `GET /v1/openapi.json` (README "API description"): the document the
//! binary serves, that it names every endpoint of the README's table, and
//! that the checker every test's responses go through (`schema`) catches
//! what it must. Every other test keeps the document true by its responses.

use serde_json::{Value, json};

use crate::schema::{Received, SOURCE, conforms, validate};
use crate::support::{Registration, TestServer, id_of};

fn document() -> Value {
    serde_json::from_str(SOURCE).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_the_document() {
    let server = TestServer::start().await;
    let response = server
        .http
        .get(server.url("/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.text().await.unwrap(), SOURCE, "the file, as it is");
    let served = server.get_ok("/v1/openapi.json").await;
    assert_eq!(served["openapi"], "3.1.0");
    assert_eq!(served["info"]["version"], env!("CARGO_PKG_VERSION"));
}

/// Every `METHOD /path` of the README's admin API table is an operation of
/// the document, and the document has no operation the README does not
/// mention somewhere.
#[test]
fn the_document_names_every_endpoint_of_the_readme() {
    let readme = include_str!("../../README.md");
    let document = document();
    let paths = document["paths"].as_object().unwrap();
    let mut named = 0;
    for line in readme.lines().filter(|l| l.starts_with("| `")) {
        let Some(request) = line.split('`').nth(1) else {
            continue;
        };
        let Some((method, target)) = request.split_once(' ') else {
            continue;
        };
        if !["GET", "POST", "PUT", "DELETE"].contains(&method) {
            continue;
        }
        let path = target.split('?').next().unwrap();
        let operation = paths
            .get(path)
            .and_then(|item| item.get(method.to_ascii_lowercase()));
        assert!(
            operation.is_some(),
            "README's {method} {path} is in the document"
        );
        named += 1;
    }
    assert!(named >= 10, "the README's table was read ({named} rows)");
    for (path, item) in paths {
        for method in ["get", "put", "post", "delete", "patch"] {
            if item.get(method).is_some() {
                let upper = method.to_ascii_uppercase();
                assert!(
                    readme.contains(&format!("{upper} {path}")),
                    "the document's {upper} {path} is in the README"
                );
            }
        }
    }
}

/// Every schema in the document uses only keywords the checker knows and
/// every `$ref` resolves: nothing in it goes unchecked.
#[test]
fn the_checker_knows_every_keyword_of_the_document() {
    fn schemas<'a>(value: &'a Value, key: Option<&str>, out: &mut Vec<&'a Value>) {
        match value {
            Value::Object(object) => {
                if matches!(key, Some("schema" | "x-event-schema")) {
                    out.push(value);
                }
                for (k, v) in object {
                    schemas(v, Some(k), out);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| schemas(v, None, out)),
            _ => {}
        }
    }
    let document = document();
    let mut found = Vec::new();
    schemas(&document["paths"], None, &mut found);
    for schema in document["components"]["schemas"]
        .as_object()
        .unwrap()
        .values()
    {
        found.push(schema);
    }
    // A value that takes every branch the checker has: it reports what
    // the value breaks, and an unknown keyword or a dangling `$ref` as such.
    let probe = json!({"a": [1, "x", null, true, {"b": 2.5}]});
    for schema in found {
        if let Err(why) = validate(&document, schema, &probe, "probe") {
            assert!(
                !why.contains("does not know") && !why.contains("points at nothing"),
                "{why}\nin {schema}"
            );
        }
    }
    // Reached through $refs too: every component against every kind of value.
    for (name, schema) in document["components"]["schemas"].as_object().unwrap() {
        for probe in [json!(null), json!(1), json!("s"), json!([]), json!({})] {
            if let Err(why) = validate(&document, schema, &probe, name) {
                assert!(!why.contains("does not know"), "{name}: {why}");
            }
        }
    }
}

fn received<'a>(
    method: &'a str,
    target: &'a str,
    status: u16,
    headers: &'a reqwest::header::HeaderMap,
    body: &'a [u8],
) -> Received<'a> {
    Received {
        method,
        target,
        status,
        headers,
        body,
    }
}

fn json_headers() -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("content-type", "application/json".parse().unwrap());
    headers
}

/// The checker refuses what the document does not say, with a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_what_the_document_does_not_say() {
    let server = TestServer::start().await;
    let service = server
        .register(&Registration::new("web-1", "web", "10.0.0.1", 80).locality("eu-1"))
        .await;
    let id = id_of(&service);
    let one = format!("/v1/services/{id}");
    let document = document();
    let headers = json_headers();
    let check = |method, target, status, body: &Value| {
        let bytes = serde_json::to_vec(body).unwrap();
        conforms(
            &document,
            &received(method, target, status, &headers, &bytes),
        )
    };
    assert_eq!(check("GET", &one, 200, &service), Ok(()));

    let refused = |outcome: Result<(), String>, needle: &str| {
        let why = outcome.expect_err("refused");
        assert!(why.contains(needle), "{needle:?} in {why:?}");
    };
    let mut broken = service.clone();
    broken.as_object_mut().unwrap().remove("health");
    refused(check("GET", &one, 200, &broken), "health is required");
    let mut broken = service.clone();
    broken["surprise"] = json!(1);
    refused(check("GET", &one, 200, &broken), "surprise");
    let mut broken = service.clone();
    broken["health"] = json!("unwell");
    refused(check("GET", &one, 200, &broken), "is not one of");
    let mut broken = service.clone();
    broken["port"] = json!(70000);
    refused(check("GET", &one, 200, &broken), "maximum");
    let mut broken = service.clone();
    broken["name"] = json!("Web-1");
    refused(check("GET", &one, 200, &broken), "does not match");
    let mut broken = service.clone();
    broken["id"] = json!("not-a-uuid");
    refused(check("GET", &one, 200, &broken), "uuid");
    let mut broken = service.clone();
    broken["locality"] = json!(null);
    refused(check("GET", &one, 200, &broken), "locality");
    refused(check("GET", &one, 418, &json!({"error": "teapot"})), "418");
    refused(check("GET", &one, 404, &json!({"error": 1})), "string");
    refused(
        check("GET", &one, 404, &json!({"error": "x", "more": 1})),
        "more",
    );
    refused(check("GET", "/v1/nowhere", 200, &json!({})), "404");
    refused(check("DELETE", &one, 200, &json!({})), "200");

    // 204 is empty; a 405 names what is allowed.
    let empty = received("DELETE", &one, 204, &headers, b"");
    assert_eq!(conforms(&document, &empty), Ok(()));
    let body = br#"{"error":"method not allowed"}"#;
    let no_allow = received("PATCH", &one, 405, &headers, body);
    refused(conforms(&document, &no_allow), "Allow");
    let mut allow = json_headers();
    allow.insert("allow", "GET,HEAD,DELETE".parse().unwrap());
    let wrong = received("PATCH", "/v1/types", 405, &allow, body);
    refused(conforms(&document, &wrong), "Allow says");
    let right = received("PATCH", &one, 405, &allow, body);
    assert_eq!(conforms(&document, &right), Ok(()));

    // Media types and required headers.
    let mut text = reqwest::header::HeaderMap::new();
    text.insert("content-type", "text/plain".parse().unwrap());
    refused(
        conforms(&document, &received("GET", &one, 200, &text, b"{}")),
        "Content-Type",
    );
    let unauthorized = received("POST", "/v1/services", 401, &headers, br#"{"error":"x"}"#);
    refused(conforms(&document, &unauthorized), "WWW-Authenticate");

    // And events.
    let event = json!({"type": "register", "timestamp": 1.5,
                       "data": {"service_id": id, "service_info": service, "replaced": false}});
    let schema = json!({"$ref": "#/components/schemas/Event"});
    assert_eq!(validate(&document, &schema, &event, "event"), Ok(()));
    let mut broken = event.clone();
    broken["data"]["replaced"] = json!("no");
    assert!(validate(&document, &schema, &broken, "event").is_err());
    let panic = json!({"type": "panic", "timestamp": 2.0,
                       "data": {"service_type": "web", "panic": true, "instances": 4, "not_critical": 1}});
    assert_eq!(validate(&document, &schema, &panic, "event"), Ok(()));
}
