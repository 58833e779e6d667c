//! Reading what a witness holds, for `verify --witness`: a file (a witness file, or the file
//! a syslog server writes, whose lines carry the JSON after their syslog prefix) or an HTTP
//! URL that answers with such lines.

use std::path::Path;
use std::time::Duration;

use super::http::http_request;
use super::WitnessedCheckpoint;

#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    #[error("witness {witness}: {why}")]
    Unreadable { witness: String, why: String },
}

/// Every checkpoint line in `text`, and the lines that looked like one but did not parse.
pub fn parse_witness_text(text: &str) -> (Vec<WitnessedCheckpoint>, Vec<String>) {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for line in text.lines() {
        // The object starts at its own first key: a relay may put braces before it (a
        // structured-data value, a mangled timestamp).
        let Some(start) = line.find("{\"secops_checkpoint\"") else {
            continue;
        };
        let json = &line[start..];
        // rsyslog may escape control characters or add trailing text; the object is the
        // part up to its last brace.
        let json = match json.rfind('}') {
            Some(end) => &json[..=end],
            None => json,
        };
        match serde_json::from_str::<WitnessedCheckpoint>(json) {
            Ok(w) => out.push(w),
            Err(e) => bad.push(format!("{e}: {line}")),
        }
    }
    (out, bad)
}

/// Loads a witness: `http://host:port/path` (GET) or a file path.
pub fn load_witness(spec: &str) -> Result<(Vec<WitnessedCheckpoint>, Vec<String>), WitnessError> {
    let unreadable = |why: String| WitnessError::Unreadable {
        witness: spec.to_owned(),
        why,
    };
    let text = if spec.starts_with("http://") {
        let (status, body) = http_request("GET", spec, None, Duration::from_secs(10))
            .map_err(|e| unreadable(e.to_string()))?;
        if status != 200 {
            return Err(unreadable(format!("answered HTTP {status}")));
        }
        String::from_utf8_lossy(&body).into_owned()
    } else {
        let path = Path::new(spec.strip_prefix("file:").unwrap_or(spec));
        let bytes = std::fs::read(path).map_err(|e| unreadable(e.to_string()))?;
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Ok(parse_witness_text(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_with_syslog_prefixes_parse() {
        let w = WitnessedCheckpoint {
            secops_checkpoint: 1,
            log_id: "00".repeat(16),
            number: 2,
            seq: 7,
            hash: "11".repeat(32),
            ts_ns: 5,
            key_id: "22".repeat(8),
            public_key: "33".repeat(32),
            signature: "44".repeat(64),
            host: None,
        };
        let text = format!(
            "{}2026-12-01T10:00:00+00:00 host secops[12]: {}\nunrelated line\n{{\"secops_checkpoint\": broken}}\n",
            w.json_line(),
            w.json_line().trim()
        );
        let (got, bad) = parse_witness_text(&text);
        assert_eq!(got, vec![w.clone(), w]);
        assert_eq!(bad.len(), 1);
    }
}
