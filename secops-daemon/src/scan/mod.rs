//! Output scanning: finds credentials and personal data in what a tool printed, before the
//! agent (or the audit log) sees it, and applies the operator's response policy.
//!
//! One SIMD literal search finds every place a prefixed token, a PEM header or a URL could
//! start; key-like names are found from their assignment (`=`, `:`) backwards, because their
//! common letters would make a literal search fire everywhere; `@` (e-mail) and digit runs
//! (card numbers) have their own skip loops because neither has a literal prefix. Each
//! candidate is then checked by hand at that position, so the cost on ordinary text is the
//! searches, not a regex per category.

#[doc(hidden)]
pub mod corpus;
mod detectors;
mod entropy;
mod luhn;
mod names;
mod response;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use response::{redact, Applied, PolicyError, ResponsePolicy, ScanOutcome, TierPolicy};

/// What kind of sensitive data a finding is. The snake_case names are stable: they appear
/// in audit records and in redaction markers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    PrivateKey,
    AwsAccessKey,
    AwsSecretKey,
    GithubToken,
    GitlabToken,
    SlackToken,
    StripeKey,
    Jwt,
    UrlPassword,
    GenericSecret,
    Email,
    CardNumber,
}

impl Category {
    pub const ALL: [Category; 12] = [
        Category::PrivateKey,
        Category::AwsAccessKey,
        Category::AwsSecretKey,
        Category::GithubToken,
        Category::GitlabToken,
        Category::SlackToken,
        Category::StripeKey,
        Category::Jwt,
        Category::UrlPassword,
        Category::GenericSecret,
        Category::Email,
        Category::CardNumber,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Category::PrivateKey => "private_key",
            Category::AwsAccessKey => "aws_access_key",
            Category::AwsSecretKey => "aws_secret_key",
            Category::GithubToken => "github_token",
            Category::GitlabToken => "gitlab_token",
            Category::SlackToken => "slack_token",
            Category::StripeKey => "stripe_key",
            Category::Jwt => "jwt",
            Category::UrlPassword => "url_password",
            Category::GenericSecret => "generic_secret",
            Category::Email => "email",
            Category::CardNumber => "card_number",
        }
    }

    /// When two findings start at the same byte and end at the same byte, the more specific
    /// category names it (an `aws_secret_access_key = ...` value is an AWS secret, not a
    /// generic one). Lower is more specific.
    fn specificity(self) -> u8 {
        match self {
            Category::GenericSecret => 2,
            Category::Email => 1,
            _ => 0,
        }
    }
}

impl std::fmt::Display for Category {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One piece of sensitive data: `text[start..end]`, byte offsets on character boundaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub category: Category,
    pub start: usize,
    pub end: usize,
}

/// The compiled detectors. Build one and share it: construction compiles the literal
/// automaton, scanning only reads it.
#[derive(Debug, Clone)]
pub struct Scanner {
    anchors: detectors::Anchors,
}

impl Default for Scanner {
    fn default() -> Self {
        Self::new()
    }
}

impl Scanner {
    pub fn new() -> Scanner {
        Scanner {
            anchors: detectors::Anchors::new(),
        }
    }

    /// Every finding in `text`, sorted by position and non-overlapping: where two overlap the
    /// one that starts first wins, then the longer one, then the more specific category.
    pub fn scan(&self, text: &str) -> Vec<Finding> {
        let mut found = Vec::new();
        detectors::find_all(&self.anchors, text.as_bytes(), &mut found);
        found.sort_unstable_by_key(|f| {
            (
                f.start,
                std::cmp::Reverse(f.end),
                f.category.specificity(),
                f.category,
            )
        });
        let mut out: Vec<Finding> = Vec::with_capacity(found.len());
        for f in found {
            // Offsets come from ASCII-only matching, but a finding that did not land on a
            // character boundary would make redaction panic or split a character; drop it
            // here so that every Finding handed out can be sliced.
            if !text.is_char_boundary(f.start) || !text.is_char_boundary(f.end) {
                continue;
            }
            if out.last().is_none_or(|last| f.start >= last.end) {
                out.push(f);
            }
        }
        out
    }

    /// Counts per category, the only thing about findings that may be recorded.
    pub fn count(findings: &[Finding]) -> BTreeMap<Category, usize> {
        let mut counts = BTreeMap::new();
        for f in findings {
            *counts.entry(f.category).or_insert(0) += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanner_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Scanner>();
    }

    #[test]
    fn category_names_are_serde_names() {
        for c in Category::ALL {
            let json = serde_json::to_string(&c).expect("serialize");
            assert_eq!(json, format!("\"{}\"", c.as_str()));
        }
    }

    #[test]
    fn overlaps_resolve_to_one_finding() {
        let s = Scanner::new();
        let text = "aws_secret_access_key = q8Vz3kLm0PxR7tYw2NbCq8Vz3kLm0PxR7tYw2NbC";
        let f = s.scan(text);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].category, Category::AwsSecretKey);
    }
}
