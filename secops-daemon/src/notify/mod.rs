//! Notifications: when a ticket is opened or decided, the people watching hear of it through
//! webhooks (JSON or a Slack-compatible shape, HMAC-signed, retried with backoff). The
//! decision path hands each event over once ([`Notifier::send`] never blocks it); one thread
//! per webhook delivers, in order, so a slow or failing receiver holds up only itself.

mod config;
mod payload;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

pub use config::{load, ConfigError, EventKind, Format, Webhook};
pub use payload::{signature, summary, TicketEvent};

use crate::time::now_ns;

/// Events waiting for one webhook; past this, new ones are dropped (and counted).
const QUEUE: usize = 1024;

/// What became of notifications, for `/metrics`.
#[derive(Default)]
pub struct Delivery {
    pub delivered: AtomicU64,
    /// Attempts that failed and were tried again.
    pub retried: AtomicU64,
    /// Given up after every retry.
    pub failed: AtomicU64,
    /// Not queued: the webhook's queue was full.
    pub dropped: AtomicU64,
}

impl Delivery {
    /// (result, count) for each result.
    pub fn counts(&self) -> [(&'static str, u64); 4] {
        [
            ("delivered", self.delivered.load(Ordering::Relaxed)),
            ("retried", self.retried.load(Ordering::Relaxed)),
            ("failed", self.failed.load(Ordering::Relaxed)),
            ("dropped", self.dropped.load(Ordering::Relaxed)),
        ]
    }
}

struct Sender {
    queue: SyncSender<TicketEvent>,
    events: Vec<EventKind>,
    url: String,
}

/// The daemon's webhooks. With none configured, sending does nothing.
pub struct Notifier {
    senders: Vec<Sender>,
    threads: Vec<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    pub delivery: Arc<Delivery>,
}

impl Notifier {
    pub fn start(webhooks: Vec<Webhook>) -> std::io::Result<Notifier> {
        let stop = Arc::new(AtomicBool::new(false));
        let delivery = Arc::new(Delivery::default());
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".to_owned());
        let mut senders = Vec::new();
        let mut threads = Vec::new();
        for (i, webhook) in webhooks.into_iter().enumerate() {
            let (queue, events) = sync_channel(QUEUE);
            senders.push(Sender {
                queue,
                events: webhook.events.clone(),
                url: webhook.url.clone(),
            });
            let (stop, delivery, host) = (stop.clone(), delivery.clone(), host.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("secops-webhook-{i}"))
                    .spawn(move || deliver(&webhook, &events, &stop, &delivery, &host))?,
            );
        }
        Ok(Notifier {
            senders,
            threads,
            stop,
            delivery,
        })
    }

    /// Queues `event` for every webhook that wants it. Never blocks.
    pub fn send(&self, event: &TicketEvent) {
        for sender in self
            .senders
            .iter()
            .filter(|s| s.events.contains(&event.kind))
        {
            match sender.queue.try_send(event.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.delivery.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        url = %sender.url,
                        ticket = event.ticket.id,
                        "webhook queue full: {} not sent",
                        event.kind.as_str()
                    );
                }
            }
        }
    }

    /// Stops the delivery threads; what is still queued or being retried is given up.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.senders.clear();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// One webhook's thread: each event in order, each tried `1 + retries` times with doubling
/// waits, until delivered (a 2xx answer) or given up.
fn deliver(
    webhook: &Webhook,
    events: &Receiver<TicketEvent>,
    stop: &AtomicBool,
    delivery: &Delivery,
    host: &str,
) {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(webhook.timeout))
        .http_status_as_error(false)
        .build()
        .new_agent();
    while !stop.load(Ordering::SeqCst) {
        let event = match events.recv_timeout(Duration::from_millis(200)) {
            Ok(event) => event,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let sent_ns = now_ns();
        let body = payload::body(&event, webhook.format, host, sent_ns);
        let timestamp = sent_ns / 1_000_000_000;
        let delivery_id = format!("{}-{}-{sent_ns}", event.ticket.id, event.kind.as_str());
        let mut wait = webhook.backoff;
        for attempt in 0..=webhook.retries {
            let mut request = agent
                .post(&webhook.url)
                .header("Content-Type", "application/json")
                .header("User-Agent", concat!("secops/", env!("CARGO_PKG_VERSION")))
                .header("X-Secops-Event", event.kind.as_str())
                .header("X-Secops-Delivery", &delivery_id)
                .header("X-Secops-Timestamp", timestamp.to_string());
            if let Some(key) = &webhook.secret {
                request = request.header("X-Secops-Signature", signature(key, timestamp, &body));
            }
            let problem = match request.send(body.as_str()) {
                Ok(response) if response.status().is_success() => None,
                Ok(response) => Some(format!("answered {}", response.status())),
                Err(e) => Some(e.to_string()),
            };
            let Some(problem) = problem else {
                delivery.delivered.fetch_add(1, Ordering::Relaxed);
                break;
            };
            if attempt == webhook.retries {
                delivery.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    url = %webhook.url,
                    ticket = event.ticket.id,
                    "webhook: {} not delivered after {} attempts: {problem}",
                    event.kind.as_str(),
                    attempt + 1
                );
                break;
            }
            delivery.retried.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(url = %webhook.url, ticket = event.ticket.id, "webhook attempt {} failed ({problem}); again in {}", attempt + 1, humantime::format_duration(wait));
            if !sleep_unless_stopped(wait, stop) {
                return;
            }
            wait = (wait * 2).min(config::MAX_BACKOFF);
        }
    }
}

/// Sleeps `duration` in short steps; false if told to stop meanwhile.
fn sleep_unless_stopped(duration: Duration, stop: &AtomicBool) -> bool {
    let until = std::time::Instant::now() + duration;
    while std::time::Instant::now() < until {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50).min(duration));
    }
    true
}
