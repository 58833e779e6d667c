//! What a webhook receives: the body in its format, and the headers that sign it.
//!
//! Signature: `X-Secops-Signature: sha256=HEX`, the HMAC-SHA256 with the webhook's key over
//! `TIMESTAMP.BODY`, where TIMESTAMP is `X-Secops-Timestamp` (Unix seconds). A receiver
//! recomputes it and refuses old timestamps, so a captured request cannot be replayed later.

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::config::{EventKind, Format};
use crate::approvals::{Ticket, TicketStatus};
use crate::time::format_ns;

/// A ticket opened or decided, as the decision path saw it.
#[derive(Clone, Debug)]
pub struct TicketEvent {
    pub kind: EventKind,
    pub ticket: Ticket,
}

/// The body for `format`.
pub fn body(event: &TicketEvent, format: Format, host: &str, sent_ns: i64) -> String {
    match format {
        Format::Json => json!({
            "event": event.kind.as_str(),
            "host": host,
            "sent_at": format_ns(sent_ns),
            "ticket": event.ticket,
        })
        .to_string(),
        Format::Slack => {
            let text = summary(event, host);
            json!({
                "text": text,
                "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
            })
            .to_string()
        }
    }
}

/// One paragraph a person can act on.
pub fn summary(event: &TicketEvent, host: &str) -> String {
    let t = &event.ticket;
    let object = if t.object.is_empty() {
        String::new()
    } else {
        format!(" `{}`", t.object)
    };
    let command = t
        .command
        .as_deref()
        .map(|c| format!("\ncommand: `{c}`"))
        .unwrap_or_default();
    match event.kind {
        EventKind::Opened => format!(
            "secops on {host}: agent *{}* asks for `{}`{object} (risk {}, rule {}): {}{command}\n\
             Approve: `secops approvals approve {}` · deny: `secops approvals deny {}` · or `secops approvals watch`",
            t.agent,
            t.action,
            t.risk,
            t.rule_id.as_deref().unwrap_or("-"),
            t.reason,
            t.id,
            t.id
        ),
        EventKind::Decided => {
            let word = match t.status {
                TicketStatus::Approved => "approved",
                TicketStatus::Denied => "denied",
                TicketStatus::Open => "still open",
            };
            let by = t.decided_by.as_deref().unwrap_or("someone");
            let because = t
                .decision_reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            format!(
                "secops on {host}: ticket #{} ({} `{}`{object}) {word} by {by}{because}",
                t.id, t.agent, t.action
            )
        }
    }
}

/// `sha256=HEX` over `TIMESTAMP.BODY`.
pub fn signature(key: &[u8], timestamp: i64, body: &str) -> String {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_and_body() {
        // RFC 4231 test case 2 ("Jefe"), with the message split at the dot.
        let sig = signature(b"Jefe", 0, "what do ya want for nothing?");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"0.what do ya want for nothing?");
        assert_eq!(
            sig,
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        );
        let mut rfc = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        rfc.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(rfc.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
