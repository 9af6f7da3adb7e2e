//! The OpenAPI document (`src/admin/openapi.json`, served as
//! `GET /v1/openapi.json`) as a test oracle: [`check_response`] checks one
//! response against it, and `support::Api` calls it on every response the
//! tests receive, so that every admin test also keeps the document true.
//!
//! A response must be documented: its path (or a 404 when no path matches),
//! its method (or a 405 with an `Allow` header when the path has no such
//! operation), its status, its media type, its required headers, and its
//! body against the schema. Schemas are checked by a small validator of the
//! JSON Schema subset the document uses; a keyword it does not know is an
//! error, so the document cannot drift into saying what nobody checks.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock, Mutex};

use regex_automata::dfa::regex::Regex;
use serde_json::Value;

/// The document, as the binary serves it.
pub(crate) const SOURCE: &str = include_str!("../../src/admin/openapi.json");

static DOCUMENT: LazyLock<Value> =
    LazyLock::new(|| serde_json::from_str(SOURCE).expect("openapi.json is JSON"));

/// One response as the client received it.
pub(crate) struct Received<'a> {
    pub(crate) method: &'a str,
    /// The request target: path and query.
    pub(crate) target: &'a str,
    pub(crate) status: u16,
    pub(crate) headers: &'a reqwest::header::HeaderMap,
    pub(crate) body: &'a [u8],
}

/// Panics, saying what and where, unless the document describes `response`.
pub(crate) fn check_response(response: &Received<'_>) {
    if let Err(why) = conforms(&DOCUMENT, response) {
        panic!(
            "{} {} answered {} {}, which the OpenAPI document does not describe: {why}",
            response.method,
            response.target,
            response.status,
            String::from_utf8_lossy(&response.body[..response.body.len().min(2000)]),
        );
    }
}

/// Whether `response` is described by `document`: `Err` says why not.
pub(crate) fn conforms(document: &Value, response: &Received<'_>) -> Result<(), String> {
    let path = response.target.split('?').next().unwrap_or("");
    let head = response.method.eq_ignore_ascii_case("HEAD");
    let method = if head {
        "get".to_string()
    } else {
        response.method.to_ascii_lowercase()
    };
    let Some(item) = path_item(document, path) else {
        // No operation names this path: the router's fallback.
        return fallback(document, response, 404, head);
    };
    let Some(operation) = item.get(&method) else {
        let allow = response
            .headers
            .get(reqwest::header::ALLOW)
            .and_then(|v| v.to_str().ok())
            .ok_or("a 405 has no Allow header")?;
        let mut documented: Vec<String> = ["get", "put", "post", "delete", "patch"]
            .iter()
            .filter(|m| item.get(**m).is_some())
            .map(|m| m.to_ascii_uppercase())
            .collect();
        if documented.iter().any(|m| m == "GET") {
            documented.push("HEAD".into());
        }
        let allowed: Vec<String> = allow.split(',').map(|m| m.trim().to_string()).collect();
        let mut sorted = allowed.clone();
        sorted.sort();
        documented.sort();
        if sorted != documented {
            return Err(format!(
                "Allow says {allowed:?}, the document {documented:?}"
            ));
        }
        return fallback(document, response, 405, head);
    };
    let status = response.status.to_string();
    let described = operation["responses"]
        .get(&status)
        .or_else(|| operation["responses"].get("default"))
        .ok_or_else(|| format!("status {status} is not documented for {method} {path}"))?;
    described_by(document, resolve(document, described)?, response, head)
}

/// A path with no operation for it: `status` with an error body.
fn fallback(
    document: &Value,
    response: &Received<'_>,
    status: u16,
    head: bool,
) -> Result<(), String> {
    if response.status != status {
        return Err(format!("no operation matches; expected {status}"));
    }
    let error = serde_json::json!({
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    });
    described_by(document, &error, response, head)
}

/// The path item whose template matches `path`: literal segments before
/// `{parameters}`, so `/v1/services/x` never matches a longer template.
fn path_item<'d>(document: &'d Value, path: &str) -> Option<&'d Value> {
    let paths = document["paths"].as_object()?;
    if let Some(item) = paths.get(path) {
        return Some(item);
    }
    let segments: Vec<&str> = path.split('/').collect();
    paths.iter().find_map(|(template, item)| {
        let parts: Vec<&str> = template.split('/').collect();
        let matches = parts.len() == segments.len()
            && parts.iter().zip(&segments).all(|(part, segment)| {
                part == segment || (part.starts_with('{') && !segment.is_empty())
            });
        matches.then_some(item)
    })
}

/// Follows `$ref` (local ones, `#/a/b`) until a value that is not one.
fn resolve<'d>(document: &'d Value, mut value: &'d Value) -> Result<&'d Value, String> {
    while let Some(reference) = value.get("$ref").and_then(Value::as_str) {
        value = pointer(document, reference)?;
    }
    Ok(value)
}

fn pointer<'d>(document: &'d Value, reference: &str) -> Result<&'d Value, String> {
    let at = reference
        .strip_prefix('#')
        .ok_or_else(|| format!("only local references: {reference}"))?;
    document
        .pointer(at)
        .ok_or_else(|| format!("{reference} points at nothing"))
}

/// Checks headers, media type and body against one Response Object.
fn described_by(
    document: &Value,
    described: &Value,
    response: &Received<'_>,
    head: bool,
) -> Result<(), String> {
    if let Some(headers) = described.get("headers").and_then(Value::as_object) {
        for (name, header) in headers {
            let value = response
                .headers
                .get(name.as_str())
                .and_then(|v| v.to_str().ok());
            match value {
                None if header["required"] == Value::Bool(true) => {
                    return Err(format!("required header {name} is missing"));
                }
                None => {}
                Some(value) => {
                    let schema = resolve(document, &header["schema"])?;
                    validate(document, schema, &Value::String(value.into()), name)
                        .map_err(|e| format!("header {e}"))?;
                }
            }
        }
    }
    let Some(content) = described.get("content").and_then(Value::as_object) else {
        return if response.body.is_empty() {
            Ok(())
        } else {
            Err("a response with no documented content has a body".into())
        };
    };
    let media_type = response
        .headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = media_type.split(';').next().unwrap_or("").trim();
    let media = content.get(essence).ok_or_else(|| {
        format!(
            "Content-Type {media_type:?} is not one of {:?}",
            content.keys()
        )
    })?;
    if head || essence != "application/json" {
        return Ok(());
    }
    let body: Value = serde_json::from_slice(response.body)
        .map_err(|e| format!("the body is not the JSON it says it is: {e}"))?;
    validate(document, &media["schema"], &body, "body")
}

/// JSON Schema (2020-12, as OpenAPI 3.1 uses it), the subset the document
/// uses: `Err` lists what `value` breaks, at JSON-pointer-ish places.
pub(crate) fn validate(
    document: &Value,
    schema: &Value,
    value: &Value,
    at: &str,
) -> Result<(), String> {
    let mut errors = Vec::new();
    check(document, schema, value, at, &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Keywords that only describe: nothing to check.
const ANNOTATIONS: &[&str] = &["description", "title", "summary", "examples", "default"];

fn check(document: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = match schema {
        Value::Bool(true) => return,
        Value::Bool(false) => return errors.push(format!("{at}: nothing is allowed here")),
        Value::Object(schema) => schema,
        _ => return errors.push(format!("{at}: the schema is not an object")),
    };
    let mut fail = |why: String| errors.push(format!("{at}: {why}"));
    let mut nested = Vec::new();
    for (keyword, rule) in schema {
        match keyword.as_str() {
            "$ref" => match pointer(document, rule.as_str().unwrap_or("")) {
                Ok(target) => check(document, target, value, at, &mut nested),
                Err(why) => fail(why),
            },
            "type" => {
                let allowed: Vec<&str> = match rule {
                    Value::String(one) => vec![one.as_str()],
                    Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
                    _ => vec![],
                };
                if !allowed.iter().any(|t| is_type(value, t)) {
                    fail(format!("{value} is not {}", allowed.join(" or ")));
                }
            }
            "enum" => {
                if !rule
                    .as_array()
                    .is_some_and(|options| options.contains(value))
                {
                    fail(format!("{value} is not one of {rule}"));
                }
            }
            "const" => {
                if rule != value {
                    fail(format!("{value} is not {rule}"));
                }
            }
            "minimum" | "maximum" => {
                if let (Some(bound), Some(number)) = (rule.as_f64(), value.as_f64()) {
                    let out = if keyword == "minimum" {
                        number < bound
                    } else {
                        number > bound
                    };
                    if out {
                        fail(format!("{number} breaks {keyword} {bound}"));
                    }
                }
            }
            "minLength" | "maxLength" => {
                if let (Some(bound), Some(text)) = (rule.as_u64(), value.as_str()) {
                    let length = text.chars().count() as u64;
                    if (keyword == "minLength" && length < bound)
                        || (keyword == "maxLength" && length > bound)
                    {
                        fail(format!("length {length} breaks {keyword} {bound}"));
                    }
                }
            }
            "pattern" => {
                if let Some(text) = value.as_str() {
                    match pattern(rule.as_str().unwrap_or("")) {
                        Ok(regex) if regex.is_match(text) => {}
                        Ok(_) => fail(format!("{text:?} does not match {rule}")),
                        Err(why) => fail(why),
                    }
                }
            }
            "format" => {
                if let Some(text) = value.as_str() {
                    let good = match rule.as_str().unwrap_or("") {
                        "uuid" => uuid::Uuid::parse_str(text).is_ok(),
                        "ipv4" => text.parse::<std::net::Ipv4Addr>().is_ok(),
                        "ipv6" => text.parse::<std::net::Ipv6Addr>().is_ok(),
                        _ => true,
                    };
                    if !good {
                        fail(format!("{text:?} is not a {rule}"));
                    }
                }
            }
            "maxItems" => {
                if let (Some(bound), Some(items)) = (rule.as_u64(), value.as_array())
                    && items.len() as u64 > bound
                {
                    fail(format!("{} items break maxItems {bound}", items.len()));
                }
            }
            "items" => {
                if let Some(items) = value.as_array() {
                    for (n, item) in items.iter().enumerate() {
                        check(document, rule, item, &format!("{at}/{n}"), &mut nested);
                    }
                }
            }
            "maxProperties" => {
                if let (Some(bound), Some(object)) = (rule.as_u64(), value.as_object())
                    && object.len() as u64 > bound
                {
                    fail(format!(
                        "{} properties break maxProperties {bound}",
                        object.len()
                    ));
                }
            }
            "required" => {
                if let Some(object) = value.as_object() {
                    for name in rule
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                    {
                        if !object.contains_key(name) {
                            fail(format!("{name} is required"));
                        }
                    }
                }
            }
            "properties" => {
                if let (Some(properties), Some(object)) = (rule.as_object(), value.as_object()) {
                    for (name, property) in properties {
                        if let Some(field) = object.get(name) {
                            check(
                                document,
                                property,
                                field,
                                &format!("{at}/{name}"),
                                &mut nested,
                            );
                        }
                    }
                }
            }
            "additionalProperties" => {
                if let Some(object) = value.as_object() {
                    let known = schema.get("properties").and_then(Value::as_object);
                    for (name, field) in object {
                        if known.is_none_or(|k| !k.contains_key(name)) {
                            check(document, rule, field, &format!("{at}/{name}"), &mut nested);
                        }
                    }
                }
            }
            "propertyNames" => {
                if let Some(object) = value.as_object() {
                    for name in object.keys() {
                        let key = Value::String(name.clone());
                        check(
                            document,
                            rule,
                            &key,
                            &format!("{at} key {name:?}"),
                            &mut nested,
                        );
                    }
                }
            }
            "oneOf" | "anyOf" => {
                let passing = rule
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|branch| validate(document, branch, value, at).is_ok())
                    .count();
                let good = if keyword == "oneOf" {
                    passing == 1
                } else {
                    passing >= 1
                };
                if !good {
                    let reasons: Vec<String> = rule
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|branch| validate(document, branch, value, at).err())
                        .collect();
                    fail(format!(
                        "{passing} branches of {keyword} match ({})",
                        reasons.join(" | ")
                    ));
                }
            }
            keyword if ANNOTATIONS.contains(&keyword) => {}
            other => fail(format!("the checker does not know the keyword {other:?}")),
        }
    }
    errors.extend(nested);
}

fn is_type(value: &Value, name: &str) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => false,
    }
}

/// `pattern`, compiled once each.
fn pattern(source: &str) -> Result<Arc<Regex>, String> {
    static COMPILED: LazyLock<Mutex<BTreeMap<String, Arc<Regex>>>> =
        LazyLock::new(Default::default);
    let mut compiled = COMPILED.lock().unwrap();
    if let Some(regex) = compiled.get(source) {
        return Ok(regex.clone());
    }
    let regex = Regex::new(source).map_err(|e| format!("pattern {source:?}: {e}"))?;
    let regex = Arc::new(regex);
    compiled.insert(source.to_string(), regex.clone());
    Ok(regex)
}

/// Panics unless `event` (one `data:` line of `/v1/events`, parsed) is an
/// `Event` of the document.
pub(crate) fn check_event(event: &Value) {
    let schema = serde_json::json!({"$ref": "#/components/schemas/Event"});
    if let Err(why) = validate(&DOCUMENT, &schema, event, "event") {
        panic!("an event the OpenAPI document does not describe: {why}\n{event}");
    }
}
