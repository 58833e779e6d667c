//! The per-category detection rules. Each detector is called at a candidate position found
//! by the literal automaton (or by the `@` and digit skip loops) and decides by hand, with
//! bounded look-around, whether a finding starts there.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use super::luhn::is_card_number;
use super::{names, Category, Finding};

/// What a literal in the automaton is the start of. Every literal holds a byte pair that
/// ordinary text rarely has (`AK`, `_`, `eyJ`, `://`, `-----`), so the case-sensitive
/// packed search (Teddy) over them runs at memory speed. Key-like names (`password`,
/// `token`: common letters) are found from their assignment instead (`names.rs`).
#[derive(Clone, Copy, Debug)]
enum Anchor {
    /// Five dashes: a PEM armour line if `BEGIN ` (any case) follows the run of dashes.
    PemDashes,
    /// A fixed token prefix (case-sensitive) and the rule for the body that must follow it.
    Token(&'static [u8], Category, Body),
    /// `.sl` in any case: the first dot of `hooks.slack.com/services/`.
    SlackWebhook,
    Jwt,
    Url,
}

#[derive(Clone, Copy, Debug)]
struct Body {
    min: usize,
    max: usize,
    extra: &'static [u8],
}

const fn body(min: usize, max: usize, extra: &'static [u8]) -> Body {
    Body { min, max, extra }
}

const ANCHORS: &[(&str, Anchor)] = &[
    // The armour's dashes; `BEGIN ` after them is compared in any case at the candidate.
    ("-----", Anchor::PemDashes),
    // AWS key ids: 4-letter type prefix + 16 upper-case alphanumerics.
    (
        "AKIA",
        Anchor::Token(b"AKIA", Category::AwsAccessKey, body(16, 16, b"")),
    ),
    (
        "ASIA",
        Anchor::Token(b"ASIA", Category::AwsAccessKey, body(16, 16, b"")),
    ),
    (
        "ABIA",
        Anchor::Token(b"ABIA", Category::AwsAccessKey, body(16, 16, b"")),
    ),
    (
        "ACCA",
        Anchor::Token(b"ACCA", Category::AwsAccessKey, body(16, 16, b"")),
    ),
    (
        "ghp_",
        Anchor::Token(b"ghp_", Category::GithubToken, body(36, 255, b"")),
    ),
    (
        "gho_",
        Anchor::Token(b"gho_", Category::GithubToken, body(36, 255, b"")),
    ),
    (
        "ghu_",
        Anchor::Token(b"ghu_", Category::GithubToken, body(36, 255, b"")),
    ),
    (
        "ghs_",
        Anchor::Token(b"ghs_", Category::GithubToken, body(36, 255, b"")),
    ),
    (
        "ghr_",
        Anchor::Token(b"ghr_", Category::GithubToken, body(36, 255, b"")),
    ),
    (
        "github_pat_",
        Anchor::Token(b"github_pat_", Category::GithubToken, body(70, 255, b"_")),
    ),
    (
        "glpat-",
        Anchor::Token(b"glpat-", Category::GitlabToken, body(20, 255, b"_-")),
    ),
    (
        "gldt-",
        Anchor::Token(b"gldt-", Category::GitlabToken, body(20, 255, b"_-")),
    ),
    (
        "glrt-",
        Anchor::Token(b"glrt-", Category::GitlabToken, body(20, 255, b"_-")),
    ),
    (
        "glptt-",
        Anchor::Token(b"glptt-", Category::GitlabToken, body(20, 255, b"_-")),
    ),
    (
        "glsoat-",
        Anchor::Token(b"glsoat-", Category::GitlabToken, body(20, 255, b"_-")),
    ),
    (
        "gloas-",
        Anchor::Token(b"gloas-", Category::GitlabToken, body(20, 255, b"_-")),
    ),
    (
        "glft-",
        Anchor::Token(b"glft-", Category::GitlabToken, body(20, 255, b"_-")),
    ),
    (
        "glcbt-",
        Anchor::Token(b"glcbt-", Category::GitlabToken, body(20, 255, b"_-")),
    ),
    (
        "xoxb-",
        Anchor::Token(b"xoxb-", Category::SlackToken, body(10, 255, b"-")),
    ),
    (
        "xoxp-",
        Anchor::Token(b"xoxp-", Category::SlackToken, body(10, 255, b"-")),
    ),
    (
        "xoxa-",
        Anchor::Token(b"xoxa-", Category::SlackToken, body(10, 255, b"-")),
    ),
    (
        "xoxr-",
        Anchor::Token(b"xoxr-", Category::SlackToken, body(10, 255, b"-")),
    ),
    (
        "xoxs-",
        Anchor::Token(b"xoxs-", Category::SlackToken, body(10, 255, b"-")),
    ),
    (
        "xoxe-",
        Anchor::Token(b"xoxe-", Category::SlackToken, body(10, 255, b"-")),
    ),
    // Publishable keys (pk_) are public by design; secret and restricted keys are not.
    (
        "sk_live_",
        Anchor::Token(b"sk_live_", Category::StripeKey, body(20, 255, b"")),
    ),
    (
        "sk_test_",
        Anchor::Token(b"sk_test_", Category::StripeKey, body(20, 255, b"")),
    ),
    (
        "rk_live_",
        Anchor::Token(b"rk_live_", Category::StripeKey, body(20, 255, b"")),
    ),
    (
        "rk_test_",
        Anchor::Token(b"rk_test_", Category::StripeKey, body(20, 255, b"")),
    ),
    // `{"` in base64url: every JWT header starts with it.
    ("eyJ", Anchor::Jwt),
    ("://", Anchor::Url),
    // The webhook host is matched in any case: its first dot and the two letters after it,
    // in each case, find it; the whole host is compared at the candidate.
    (".sl", Anchor::SlackWebhook),
    (".sL", Anchor::SlackWebhook),
    (".Sl", Anchor::SlackWebhook),
    (".SL", Anchor::SlackWebhook),
];

#[derive(Debug, Clone)]
pub(super) struct Anchors {
    automaton: AhoCorasick,
}

impl Anchors {
    pub(super) fn new() -> Anchors {
        let automaton = AhoCorasickBuilder::new()
            .match_kind(MatchKind::LeftmostFirst)
            .build(ANCHORS.iter().map(|(p, _)| p))
            .unwrap_or_else(|e| {
                // The pattern list is a constant: a build failure is a programming error
                // that every test would catch, not a data-dependent one.
                panic!("output scanner anchors do not compile: {e}")
            });
        Anchors { automaton }
    }
}

pub(super) fn find_all(anchors: &Anchors, text: &[u8], out: &mut Vec<Finding>) {
    let mut at = 0usize;
    // Every position where a literal starts is examined, also inside an earlier match
    // (`xoxb------BEGIN `): the search resumes one byte after a match's start.
    while let Some(m) = anchors
        .automaton
        .find(aho_corasick::Input::new(text).range(at..))
    {
        let start = m.start();
        at = start + 1;
        match ANCHORS[m.pattern().as_usize()].1 {
            Anchor::PemDashes => at = pem_dashes(text, start, out),
            Anchor::Token(prefix, category, body) => {
                token(text, start, prefix, category, body, out)
            }
            Anchor::SlackWebhook => {
                const HOST: &[u8] = b"hooks.slack.com/services/";
                if let Some(host) = start
                    .checked_sub(5)
                    .and_then(|s| text.get(s..s + HOST.len()))
                {
                    if host.eq_ignore_ascii_case(HOST) {
                        slack_webhook(text, start + HOST.len() - 5, out);
                    }
                }
            }
            Anchor::Jwt => jwt(text, start, out),
            Anchor::Url => url_password(text, start, out),
        }
    }
    names::assignments(text, out);
    emails(text, out);
    cards(text, out);
}

/// A run of dashes starting at `start`: a PEM armour line starts at its last five if
/// `BEGIN ` (any case) follows. Returns where the run ends, where the search resumes.
fn pem_dashes(text: &[u8], start: usize, out: &mut Vec<Finding>) -> usize {
    let end = start + text[start..].iter().take_while(|&&b| b == b'-').count();
    if text
        .get(end..end + 6)
        .is_some_and(|w| w.eq_ignore_ascii_case(b"BEGIN "))
    {
        private_key(text, end - 5, out);
    }
    end
}

pub(super) fn push(out: &mut Vec<Finding>, category: Category, start: usize, end: usize) {
    out.push(Finding {
        category,
        start,
        end,
    });
}

pub(super) fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Markers that say "this is an illustration, not a credential": documented example keys
/// (AWS's AKIAIOSFODNN7EXAMPLE), placeholders and masked values.
///
/// Words of five letters or more: a random alphanumeric body of 40 bytes holds a given
/// 5-letter word (any case) by chance about once in a million. A shorter marker such as
/// `xxxx` would be found in about 0.15% of RSA-2048 private key bodies, so masking is
/// recognised by a run of one masking character instead ([`is_masked`]).
pub(super) fn is_marked_example(secret: &[u8]) -> bool {
    const MARKERS: &[&[u8]] = &[b"example", b"dummy", b"placeholder", b"redacted"];
    MARKERS
        .iter()
        .any(|m| secret.windows(m.len()).any(|w| w.eq_ignore_ascii_case(m)))
        || is_masked(secret)
}

/// A value masked by hand (`ghp_xxxxxxxx...`, `****************`): eight or more of one
/// masking character in a row. Random base64 of 2 KiB holds such a run with a chance below
/// one in a billion.
fn is_masked(secret: &[u8]) -> bool {
    const RUN: usize = 8;
    let mut run = 0usize;
    let mut prev = 0u8;
    for &b in secret {
        if matches!(b, b'x' | b'X' | b'*') && b == prev {
            run += 1;
        } else {
            run = usize::from(matches!(b, b'x' | b'X' | b'*'));
        }
        if run >= RUN {
            return true;
        }
        prev = b;
    }
    false
}

/// Length of the run at `text[from..]` of bytes that are alphanumeric or in `extra`.
fn run_len(text: &[u8], from: usize, extra: &[u8], cap: usize) -> usize {
    text.get(from..)
        .unwrap_or_default()
        .iter()
        .take(cap)
        .take_while(|b| b.is_ascii_alphanumeric() || extra.contains(b))
        .count()
}

fn token(
    text: &[u8],
    start: usize,
    prefix: &[u8],
    category: Category,
    body: Body,
    out: &mut Vec<Finding>,
) {
    if text.get(start..start + prefix.len()) != Some(prefix) {
        return;
    }
    if start > 0 && is_word(text[start - 1]) {
        return;
    }
    let from = start + prefix.len();
    let cap = body.max + 1;
    let n = if category == Category::AwsAccessKey {
        // Key ids are upper-case: a lower-case letter means an ordinary word ("ASIAN...").
        text.get(from..)
            .unwrap_or_default()
            .iter()
            .take(cap)
            .take_while(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            .count()
    } else {
        run_len(text, from, body.extra, cap)
    };
    if n < body.min || n > body.max {
        return;
    }
    let end = from + n;
    if text.get(end).is_some_and(|&b| is_word(b)) {
        return;
    }
    let secret = &text[from..end];
    if is_marked_example(secret) || !secret.iter().any(u8::is_ascii_digit) && n < 30 {
        // Real tokens of these lengths are random and all but never digit-free; a short
        // digit-free body is an identifier such as `sk_test_helper_function_name`.
        return;
    }
    push(out, category, start, end);
}

fn slack_webhook(text: &[u8], path_start: usize, out: &mut Vec<Finding>) {
    // services/T<workspace>/B<channel>/<secret>
    let n = run_len(text, path_start, b"/", 128);
    let path = &text[path_start..path_start + n];
    let parts: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
    if parts.len() == 3
        && parts[0].first() == Some(&b'T')
        && parts[1].first() == Some(&b'B')
        && parts[2].len() >= 16
        && !is_marked_example(path)
    {
        push(out, Category::SlackToken, path_start, path_start + n);
    }
}

fn b64url_run(text: &[u8], from: usize) -> usize {
    // Bounded so that a long base64url blob costs one pass; real tokens are far shorter.
    run_len(text, from, b"-_", 16 * 1024)
}

fn jwt(text: &[u8], start: usize, out: &mut Vec<Finding>) {
    if text.get(start..start + 3) != Some(b"eyJ") || (start > 0 && is_word(text[start - 1])) {
        return;
    }
    let header = b64url_run(text, start);
    let dot1 = start + header;
    if header < 10 || text.get(dot1) != Some(&b'.') {
        return;
    }
    let payload_start = dot1 + 1;
    if text.get(payload_start..payload_start + 3) != Some(b"eyJ") {
        return;
    }
    let payload = b64url_run(text, payload_start);
    let dot2 = payload_start + payload;
    if payload < 10 || text.get(dot2) != Some(&b'.') {
        return;
    }
    // An unsigned token (`alg: none`) still carries the claims, so the signature may be
    // empty; anything shorter than a real MAC is not a signature.
    let sig = b64url_run(text, dot2 + 1);
    if sig != 0 && sig < 16 {
        return;
    }
    let end = dot2 + 1 + sig;
    if is_marked_example(&text[start..end]) {
        return;
    }
    push(out, Category::Jwt, start, end);
}

const PRIVATE_KEY_KINDS: &[&[u8]] = &[
    b"PRIVATE KEY-----",
    b"RSA PRIVATE KEY-----",
    b"EC PRIVATE KEY-----",
    b"DSA PRIVATE KEY-----",
    b"OPENSSH PRIVATE KEY-----",
    b"ENCRYPTED PRIVATE KEY-----",
    b"PGP PRIVATE KEY BLOCK-----",
];

fn private_key(text: &[u8], start: usize, out: &mut Vec<Finding>) {
    let after = start + b"-----BEGIN ".len();
    let rest = text.get(after..).unwrap_or_default();
    let Some(kind) = PRIVATE_KEY_KINDS.iter().find(|k| rest.starts_with(k)) else {
        return;
    };
    let body_start = after + kind.len();
    let tail = &text[body_start..];
    // Without an END line the output was cut off mid-key: what is there is still key
    // material, so the finding runs to the next PEM boundary, blank line or end of text.
    let dash = memchr::memmem::find(tail, b"-----");
    // Only look for a blank line before the next dashes, so that many headers in one text
    // do not each search to its end.
    let blank = memchr::memmem::find(&tail[..dash.unwrap_or(tail.len())], b"\n\n");
    let (body_end, end) = match dash {
        Some(i) if blank.is_none_or(|b| i < b) && tail[i..].starts_with(b"-----END ") => {
            let e = body_start + i;
            let close = memchr::memmem::find(&text[e + 9..], b"-----")
                .filter(|&j| j <= 40)
                .map_or(e + 9, |j| e + 9 + j + 5);
            (e, close)
        }
        _ => {
            let cut = body_start + dash.into_iter().chain(blank).min().unwrap_or(tail.len());
            (cut, cut)
        }
    };
    let body = &text[body_start..body_end];
    // Documentation shows the header around "..." or a placeholder line; a key has base64.
    let b64 = body
        .iter()
        .filter(|b| b.is_ascii_alphanumeric() || **b == b'+' || **b == b'/')
        .count();
    let line_end =
        |from: usize| memchr::memchr(b'\n', &text[from..]).map_or(text.len(), |i| from + i);
    let armour = [
        &text[body_start..line_end(body_start).min(body_end)],
        &text[body_end..line_end(end).max(end)],
    ];
    if b64 < 40 || is_example_key(armour, body) {
        return;
    }
    push(out, Category::PrivateKey, start, end);
}

/// Published example keys (RFC 8410's Ed25519 key, in its PKCS#8 v1 and v2 forms), as their
/// base64 without line breaks. Test suites and documentation copy them everywhere.
const KNOWN_EXAMPLE_KEYS: &[&[u8]] = &[
    b"MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC",
    b"MHICAQEwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhCoB8wHQYKKoZIhvcNAQkJFDEPDA1DdXJkbGUgQ2hhaXJzgSEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=",
];

/// Whether a PEM private key is an illustration. Judged on what a key's random body cannot
/// produce by chance: the armour (the rest of the BEGIN line, the header lines such as
/// `Comment: example key`, and the END line), a body masked by hand, and the published
/// example keys. Never on words inside the base64, which holds every short string somewhere
/// (`xxxx` in about 0.15% of RSA-2048 keys).
fn is_example_key(armour: [&[u8]; 2], body: &[u8]) -> bool {
    // Header lines (RFC 1421 `Proc-Type:`, PGP `Comment:`) have a colon; base64 has none.
    let headers = body
        .split(|&b| b == b'\n')
        .filter(|line| line.contains(&b':'));
    if armour.into_iter().chain(headers).any(is_marked_example) || is_masked(body) {
        return true;
    }
    let base64: Vec<u8> = body
        .split(|&b| b == b'\n')
        .filter(|line| !line.contains(&b':'))
        .flat_map(|line| line.iter().copied().filter(|b| !b.is_ascii_whitespace()))
        .collect();
    KNOWN_EXAMPLE_KEYS.contains(&base64.as_slice())
}

/// Passwords that only name the field (`postgres://user:password@host`) or are filled in
/// later (`${DB_PASS}`, `<password>`, `%s`, `****`).
fn is_placeholder_password(pw: &[u8]) -> bool {
    const WORDS: &[&[u8]] = &[b"password", b"pass", b"passwd", b"pwd", b"secret", b"pw"];
    WORDS.iter().any(|w| pw.eq_ignore_ascii_case(w))
        || matches!(pw.first(), Some(b'$' | b'<' | b'{' | b'%'))
        || pw
            .iter()
            .all(|&b| b == b'*' || b == b'x' || b == b'X' || b == b'.')
        || is_marked_example(pw)
}

fn url_password(text: &[u8], sep: usize, out: &mut Vec<Finding>) {
    // The scheme must be right before `://`.
    let scheme = text[..sep]
        .iter()
        .rev()
        .take(32)
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'.' | b'-'))
        .count();
    if scheme == 0 || !text[sep - scheme].is_ascii_alphabetic() {
        return;
    }
    let auth_start = sep + 3;
    // The authority ends at the first '/', '?', '#' or space; the last '@' in it ends the
    // userinfo (passwords may contain an unescaped '@' in sloppy configs, hosts may not).
    let authority = text[auth_start..]
        .iter()
        .take(512)
        .take_while(|&&b| {
            !(b.is_ascii_whitespace()
                || matches!(b, b'/' | b'?' | b'#' | b'"' | b'\'' | b'<' | b'>' | b'`'))
        })
        .count();
    let auth = &text[auth_start..auth_start + authority];
    let Some(at) = memchr::memrchr(b'@', auth) else {
        return;
    };
    let Some(colon) = memchr::memchr(b':', &auth[..at]) else {
        return;
    };
    let pw = &auth[colon + 1..at];
    // A host must follow the userinfo.
    if pw.is_empty()
        || !auth
            .get(at + 1)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'[')
        || is_placeholder_password(pw)
    {
        return;
    }
    let start = auth_start + colon + 1;
    push(out, Category::UrlPassword, start, start + pw.len());
}

/// Domains reserved for documentation and testing (RFC 2606, RFC 6761) and the file
/// extensions that make `icon@2x.png` look like an address.
fn is_reserved_domain(domain: &[u8]) -> bool {
    const EXACT: &[&[u8]] = &[b"example.com", b"example.net", b"example.org"];
    const SUFFIX: &[&[u8]] = &[
        b".example.com",
        b".example.net",
        b".example.org",
        b".example",
        b".test",
        b".invalid",
        b".localhost",
        b".local",
        b".png",
        b".jpg",
        b".jpeg",
        b".gif",
        b".svg",
        b".webp",
        b".ico",
    ];
    let ends_with = |s: &[u8]| {
        domain.len() >= s.len() && domain[domain.len() - s.len()..].eq_ignore_ascii_case(s)
    };
    EXACT.iter().any(|e| domain.eq_ignore_ascii_case(e)) || SUFFIX.iter().any(|s| ends_with(s))
}

/// E-mail addresses: `local@label.label...tld`, alphabetic TLD of two or more letters. A
/// domain without a dot (`user@localhost`) is a local account, not an address someone can
/// be reached at, and is not reported; nor are scp-style remotes (`git@host:repo`) and URL
/// userinfo (`ssh://git@host`), which name service accounts.
fn emails(text: &[u8], out: &mut Vec<Finding>) {
    for at in memchr::memchr_iter(b'@', text) {
        let local_ok = |b: &u8| b.is_ascii_alphanumeric() || b"._%+-".contains(b);
        let local = text[..at]
            .iter()
            .rev()
            .take(65)
            .take_while(|b| local_ok(b))
            .count();
        if local == 0 || local > 64 {
            continue;
        }
        let start = at - local;
        if text[start] == b'.' || text[at - 1] == b'.' {
            continue;
        }
        if start > 0 && matches!(text[start - 1], b'/' | b':' | b'@') {
            let mailto = start >= 7 && text[start - 7..start].eq_ignore_ascii_case(b"mailto:");
            if !mailto {
                continue;
            }
        }
        let dom_start = at + 1;
        let mut dom_len = text[dom_start..]
            .iter()
            .take(254)
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'-' || **b == b'.')
            .count();
        while dom_len > 0 && matches!(text[dom_start + dom_len - 1], b'.' | b'-') {
            dom_len -= 1;
        }
        let domain = &text[dom_start..dom_start + dom_len];
        let Some(dot) = memchr::memrchr(b'.', domain) else {
            continue;
        };
        let tld = &domain[dot + 1..];
        if tld.len() < 2
            || !tld.iter().all(u8::is_ascii_alphabetic)
            || domain.starts_with(b".")
            || domain.windows(2).any(|w| w == b"..")
            || is_reserved_domain(domain)
        {
            continue;
        }
        let end = dom_start + dom_len;
        if text.get(end) == Some(&b':') || text.get(end).is_some_and(|b| is_word(*b)) {
            continue;
        }
        push(out, Category::Email, start, end);
    }
}

fn is_card_byte(b: u8) -> bool {
    b.is_ascii_digit() || b == b' ' || b == b'-'
}

/// Card numbers: 13 to 19 digits, bare or in the printed groupings (4-4-4-4[-1..3], 4-6-5,
/// 4-6-4) with one consistent space or dash, issuer prefix known, Luhn valid.
fn cards(text: &[u8], out: &mut Vec<Finding>) {
    // The shortest card is 13 bytes of digits and separators, so probing every 13th byte
    // sees at least one byte of any card; text without long digit runs is skipped 13 bytes
    // at a time.
    const STRIDE: usize = 13;
    let mut probe = STRIDE - 1;
    let mut done = 0usize;
    while probe < text.len() {
        if !is_card_byte(text[probe]) || probe < done {
            probe += STRIDE;
            continue;
        }
        let mut s = probe;
        while s > done && is_card_byte(text[s - 1]) {
            s -= 1;
        }
        let mut e = probe + 1;
        while e < text.len() && is_card_byte(text[e]) {
            e += 1;
        }
        if e - s >= 13 {
            cards_in_run(text, s, e, out);
        }
        done = e;
        probe = e + STRIDE;
    }
}

fn cards_in_run(text: &[u8], s: usize, e: usize, out: &mut Vec<Finding>) {
    // Digit groups and the single separator (or none) before each.
    let mut groups: Vec<(usize, usize, Option<u8>)> = Vec::new();
    let mut i = s;
    let mut sep: Option<u8> = None;
    let mut broken = true;
    while i < e {
        if text[i].is_ascii_digit() {
            let g = i;
            while i < e && text[i].is_ascii_digit() {
                i += 1;
            }
            // A group after a double separator starts a fresh chain.
            groups.push((g, i, if broken { None } else { sep }));
            broken = false;
        } else {
            let sep_start = i;
            while i < e && !text[i].is_ascii_digit() {
                i += 1;
            }
            sep = Some(text[sep_start]);
            broken = i - sep_start != 1;
        }
    }
    let mut digits = Vec::with_capacity(19);
    let mut g = 0;
    while g < groups.len() {
        let (gs, ge, _) = groups[g];
        let mut best: Option<(usize, usize)> = None;
        if (13..=19).contains(&(ge - gs)) {
            best = Some((gs, ge));
        } else if ge - gs == 4 {
            // Extend through the chain of groups with the same separator.
            let mut lens = vec![4usize];
            let mut k = g + 1;
            let chain_sep = groups.get(k).and_then(|x| x.2);
            while let Some(&(ks, ke, ksep)) = groups.get(k) {
                if ksep.is_none() || ksep != chain_sep || lens.len() == 5 {
                    break;
                }
                lens.push(ke - ks);
                let total: usize = lens.iter().sum();
                let shape_ok = match lens.as_slice() {
                    [4, 6, 5] | [4, 6, 4] => true,
                    [4, rest @ ..] => rest.split_last().is_some_and(|(last, mid)| {
                        mid.iter().all(|&l| l == 4) && (1..=4).contains(last)
                    }),
                    _ => false,
                };
                if shape_ok && (13..=19).contains(&total) {
                    digits.clear();
                    for &(a, b, _) in &groups[g..=k] {
                        digits.extend_from_slice(&text[a..b]);
                    }
                    if is_card_number(&digits) {
                        best = Some((gs, ke));
                    }
                }
                k += 1;
            }
        }
        if let Some((a, b)) = best {
            digits.clear();
            digits.extend(text[a..b].iter().filter(|d| d.is_ascii_digit()));
            let left_ok = a == 0 || !(is_word(text[a - 1]) || matches!(text[a - 1], b'.' | b'+'));
            let right_ok = match (text.get(b), text.get(b + 1)) {
                (Some(c), _) if is_word(*c) => false,
                (Some(b'.' | b','), Some(d)) if d.is_ascii_digit() => false,
                _ => true,
            };
            if left_ok && right_ok && is_card_number(&digits) {
                push(out, Category::CardNumber, a, b);
                while g < groups.len() && groups[g].0 < b {
                    g += 1;
                }
                continue;
            }
        }
        g += 1;
    }
}
