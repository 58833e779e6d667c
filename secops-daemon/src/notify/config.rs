//! The notifications file (`/etc/secops/notifications.yaml`, or `secops daemon
//! --notifications FILE`): where people hear of approval tickets. Read when the daemon starts;
//! a file that is there but wrong stops the daemon (a typo must not silently mean nobody is
//! told), a missing file means no notifications.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    webhooks: Vec<WebhookSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookSpec {
    url: String,
    #[serde(default)]
    format: Format,
    /// A file holding the HMAC-SHA256 key (its bytes, trailing newline removed).
    secret_file: Option<PathBuf>,
    /// Which events go to this webhook; both when absent.
    events: Option<Vec<EventKind>>,
    /// Per attempt, e.g. `5s`.
    timeout: Option<String>,
    /// Attempts after the first failed one.
    retries: Option<u32>,
    /// The wait before the first retry, doubled for each next one (at most 5 minutes).
    backoff: Option<String>,
}

/// The body a webhook gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// secops' own JSON: the event and the whole ticket.
    #[default]
    Json,
    /// Slack's incoming-webhook shape (`text` and `blocks`), which Slack-compatible chat
    /// servers accept too.
    Slack,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Opened,
    Decided,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Opened => "ticket.opened",
            EventKind::Decided => "ticket.decided",
        }
    }
}

/// One webhook, checked.
#[derive(Clone, Debug)]
pub struct Webhook {
    pub url: String,
    pub format: Format,
    pub secret: Option<Vec<u8>>,
    pub events: Vec<EventKind>,
    pub timeout: Duration,
    pub retries: u32,
    pub backoff: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The webhooks `path` names; none when the file does not exist.
pub fn load(path: &Path) -> Result<Vec<Webhook>, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(invalid(format!("cannot read it: {e}"))),
    };
    // A file of comments only (the package's example) names no webhook.
    let file: File = match serde_yaml::from_str::<serde_yaml::Value>(&text) {
        Ok(serde_yaml::Value::Null) => File::default(),
        _ => serde_yaml::from_str(&text).map_err(|e| invalid(e.to_string()))?,
    };
    file.webhooks
        .into_iter()
        .enumerate()
        .map(|(i, spec)| {
            webhook(spec).map_err(|message| invalid(format!("webhooks[{i}]: {message}")))
        })
        .collect()
}

fn duration(field: &str, text: Option<&str>, default: Duration) -> Result<Duration, String> {
    match text {
        None => Ok(default),
        Some(text) => humantime::parse_duration(text)
            .map_err(|e| format!("{field}: {text:?}: {e} (write it with a unit: 5s, 2m)")),
    }
}

fn webhook(spec: WebhookSpec) -> Result<Webhook, String> {
    let scheme_ok = spec.url.starts_with("http://") || spec.url.starts_with("https://");
    if !scheme_ok {
        return Err(format!(
            "url: {:?} is not an http:// or https:// URL",
            spec.url
        ));
    }
    let secret = match &spec.secret_file {
        None => None,
        Some(file) => {
            let mut key =
                std::fs::read(file).map_err(|e| format!("secret_file: {}: {e}", file.display()))?;
            while key.last().is_some_and(|b| b.is_ascii_whitespace()) {
                key.pop();
            }
            if key.is_empty() {
                return Err(format!("secret_file: {} is empty", file.display()));
            }
            Some(key)
        }
    };
    let timeout = duration("timeout", spec.timeout.as_deref(), Duration::from_secs(5))?;
    let backoff = duration("backoff", spec.backoff.as_deref(), Duration::from_secs(1))?;
    if timeout.is_zero() || backoff.is_zero() || backoff > MAX_BACKOFF {
        return Err(format!(
            "timeout and backoff are more than 0s, backoff at most {}",
            humantime::format_duration(MAX_BACKOFF)
        ));
    }
    let events = spec
        .events
        .unwrap_or_else(|| vec![EventKind::Opened, EventKind::Decided]);
    if events.is_empty() {
        return Err("events: names no event (leave it out for both)".to_owned());
    }
    Ok(Webhook {
        url: spec.url,
        format: spec.format,
        secret,
        events,
        timeout,
        retries: spec.retries.unwrap_or(5).min(20),
        backoff,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<Vec<Webhook>, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notifications.yaml");
        std::fs::write(&path, text).unwrap();
        std::fs::write(dir.path().join("key"), "s3cret\n").unwrap();
        let text = text.replace("KEY", &dir.path().join("key").display().to_string());
        std::fs::write(&path, text).unwrap();
        load(&path)
    }

    #[test]
    fn webhooks_are_read_with_defaults_and_mistakes_are_named() {
        let hooks = load_text(
            "webhooks:\n  - url: http://127.0.0.1:9/a\n  - {url: https://hooks.example/x, format: slack, secret_file: KEY, events: [opened], retries: 2, backoff: 50ms}\n",
        )
        .unwrap();
        assert_eq!(hooks.len(), 2);
        assert_eq!(hooks[0].format, Format::Json);
        assert_eq!(hooks[0].events, [EventKind::Opened, EventKind::Decided]);
        assert_eq!(
            (hooks[0].retries, hooks[0].timeout),
            (5, Duration::from_secs(5))
        );
        assert_eq!(hooks[1].secret.as_deref(), Some(&b"s3cret"[..]));
        assert_eq!(hooks[1].backoff, Duration::from_millis(50));
        assert!(load_text("# nothing yet\n").unwrap().is_empty());
        for (text, want) in [
            ("webhooks:\n  - url: ftp://x\n", "webhooks[0]: url"),
            ("webhooks:\n  - {url: http://x, timeout: 5}\n", "timeout"),
            (
                "webhooks:\n  - {url: http://x, sercet_file: /k}\n",
                "unknown field `sercet_file`",
            ),
            (
                "webhooks:\n  - {url: http://x, secret_file: /nonexistent/k}\n",
                "secret_file",
            ),
        ] {
            let e = load_text(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        assert!(load(Path::new("/nonexistent/notifications.yaml"))
            .unwrap()
            .is_empty());
    }
}
