//! Request bodies: read up to a route's limit (a 413 names it) and parsed as JSON, with the
//! field, line and column of what was wrong.

use axum::body::Body;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Reads a body of at most `limit` bytes; a longer one is a 413 that names the limit.
async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than the limit of {limit} bytes"),
            )
        } else {
            ApiError::bad_request(format!("reading the request body: {e}"))
        }
    })
}

/// Parses a whole JSON body; the error names the field, line and column that were wrong.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Tracking the path slows every parse down, and a body that parses needs no path: only a
    // failed one is parsed again, to say where it went wrong.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::bad_request(format!("malformed request body: {inner}"))
        } else {
            ApiError::bad_request(format!("malformed request body: field `{path}`: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("malformed request body: {e}")))?;
    Ok(value)
}

pub(super) async fn read_json<T: DeserializeOwned>(
    body: Body,
    limit: usize,
) -> Result<T, ApiError> {
    parse_json(&read_body(body, limit).await?)
}

/// Like [`read_json`], but an empty body means all defaults.
pub(super) async fn read_json_or_empty<T: DeserializeOwned + Default>(
    body: Body,
    limit: usize,
) -> Result<T, ApiError> {
    let bytes = read_body(body, limit).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_json(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[allow(dead_code)]
        action: String,
        #[allow(dead_code)]
        durable: Option<bool>,
    }

    #[test]
    fn a_bad_body_names_the_field_that_was_wrong() {
        assert!(parse_json::<Body>(br#"{"action": "fs:delete"}"#).is_ok());
        let wrong = parse_json::<Body>(br#"{"action": "fs:delete", "durable": "yes"}"#)
            .unwrap_err()
            .message;
        assert!(wrong.contains("field `durable`"), "{wrong}");
        let unknown = parse_json::<Body>(br#"{"action": "x", "agent_name": "me"}"#)
            .unwrap_err()
            .message;
        assert!(unknown.contains("agent_name"), "{unknown}");
        let broken = parse_json::<Body>(b"{").unwrap_err().message;
        assert!(broken.starts_with("malformed request body"), "{broken}");
    }
}
