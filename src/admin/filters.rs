//! The query-string filters of the list and event endpoints.

use super::error::ApiError;
use crate::service::{Health, ValidationError, validate_label};

/// Query-string filters, all optional; an empty value counts as absent.
#[derive(Debug, Default)]
pub(crate) struct Filters {
    pub(crate) service_type: Option<String>,
    pub(crate) tag: Option<String>,
    pub(crate) health: Option<Health>,
    pub(crate) locality: Option<String>,
}

pub(crate) fn parse_filters(raw: Option<String>, allowed: &[&str]) -> Result<Filters, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::BadRequest(format!("malformed query string: {e}")))?;
    let mut filters = Filters::default();
    for (key, value) in pairs {
        if !allowed.contains(&key.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "unknown filter {key:?}: use {}",
                allowed.join(", ")
            )));
        }
        if value.is_empty() {
            continue;
        }
        let bad = |e: ValidationError| ApiError::BadRequest(e.to_string());
        match key.as_str() {
            "type" => filters.service_type = Some(validate_label("type", &value).map_err(bad)?),
            "tag" => filters.tag = Some(validate_label("tag", &value).map_err(bad)?),
            "locality" => filters.locality = Some(validate_label("locality", &value).map_err(bad)?),
            "health" => {
                filters.health = Some(match value.as_str() {
                    "passing" => Health::Passing,
                    "warning" => Health::Warning,
                    "critical" => Health::Critical,
                    _ => {
                        return Err(ApiError::BadRequest(format!(
                            "health must be passing, warning or critical, got {value:?}"
                        )));
                    }
                })
            }
            _ => unreachable!("checked against allowed"),
        }
    }
    Ok(filters)
}
