//! A deterministic corpus for judging the scanner as a whole: megabytes of ordinary tool
//! output (logs, code, JSON, build output) with secrets planted at known places and
//! look-alikes (placeholders, documented example keys, hashes, ids, public keys, reserved
//! domains, numbers that fail Luhn) in between. The tests check recall and false positives
//! on it; the scan bench measures throughput on it.

use super::Category;

/// One planted secret: `text[start..end]` holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planted {
    pub category: Category,
    pub start: usize,
    pub end: usize,
}

pub struct Corpus {
    pub text: String,
    pub planted: Vec<Planted>,
    pub look_alikes: usize,
}

/// How a scan of the corpus went.
#[derive(Debug, PartialEq, Eq)]
pub struct Score {
    /// Planted secrets a finding of the right category overlaps.
    pub found: usize,
    pub planted: usize,
    /// Findings that overlap no planted secret.
    pub false_positives: Vec<(Category, String)>,
}

impl Corpus {
    pub fn score(&self, findings: &[super::Finding]) -> Score {
        let overlaps = |p: &Planted, f: &super::Finding| f.start < p.end && p.start < f.end;
        let found = self
            .planted
            .iter()
            .filter(|p| {
                findings
                    .iter()
                    .any(|f| overlaps(p, f) && f.category == p.category)
            })
            .count();
        let false_positives = findings
            .iter()
            .filter(|f| !self.planted.iter().any(|p| overlaps(p, f)))
            .map(|f| (f.category, self.text[f.start..f.end].to_owned()))
            .collect();
        Score {
            found,
            planted: self.planted.len(),
            false_positives,
        }
    }
}

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
    fn chars(&mut self, n: usize, alphabet: &[u8]) -> String {
        (0..n)
            .map(|_| char::from(alphabet[self.below(alphabet.len())]))
            .collect()
    }
    /// At least one digit and one letter, as generated secrets have.
    fn with_digit(&mut self, n: usize, alphabet: &[u8]) -> String {
        loop {
            let s = self.chars(n, alphabet);
            if s.bytes().any(|b| b.is_ascii_digit()) && s.bytes().any(|b| b.is_ascii_alphabetic()) {
                return s;
            }
        }
    }
    fn alnum(&mut self, n: usize) -> String {
        self.with_digit(n, ALNUM)
    }
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const UPPER_DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const HEX: &[u8] = b"0123456789abcdef";

const FILLER: &[&str] = &[
    "2026-11-22T03:54:15.123Z INFO  server::http: GET /api/v1/items?page=2 200 12ms",
    "2026-11-22T03:54:15.456Z WARN  worker::queue: retrying job 48213 after timeout (attempt 2/5)",
    "   Compiling serde_json v1.0.133",
    "error[E0308]: mismatched types --> src/main.rs:42:17",
    "    let config = Config::from_env().context(\"reading configuration\")?;",
    "    fn handle(&self, req: Request<Body>) -> Result<Response<Body>, Error> {",
    "        for (i, item) in items.iter().enumerate() { total += item.price * item.qty; }",
    "def parse_args(argv):  # returns a namespace with the options the user passed",
    "    return {\"name\": name, \"count\": len(values), \"ok\": True}",
    "{\"id\": 4711, \"status\": \"active\", \"tags\": [\"build\", \"ci\"], \"duration_ms\": 1834}",
    "{\"level\":\"info\",\"msg\":\"request done\",\"path\":\"/healthz\",\"code\":200}",
    "test engine::tests::deny_overrides ... ok",
    "drwxr-xr-x  5 coder coder  4096 Nov 22 03:50 src",
    "-rw-r--r--  1 coder coder 18234 Nov 22 03:51 Cargo.lock",
    "The quick brown fox jumps over the lazy dog while the build finishes in the background.",
    "Fetched 1,204 kB in 2s (602 kB/s); Reading package lists... Done",
    "<div class=\"card\"><span>Total</span><b>3 items</b></div>",
    "SELECT id, name, created_at FROM users WHERE active = true ORDER BY created_at DESC LIMIT 50;",
    "    at com.example.service.Handler.process(Handler.java:118)",
    "npm WARN deprecated inflight@1.0.6: This module is not supported",
    "remote: Counting objects: 100% (35/35), done.",
    "    self.session = requests.Session()",
    "  if (auth_mode === 'oauth') { return refreshToken(session); }",
    "passed: 1432, failed: 0, skipped: 12 (token bucket tests included)",
];

/// A Luhn-valid number of `len` digits starting with `prefix`.
fn card(rng: &mut Lcg, prefix: &str, len: usize) -> String {
    let mut digits: Vec<u8> = prefix.bytes().map(|b| b - b'0').collect();
    while digits.len() < len - 1 {
        digits.push(rng.below(10) as u8);
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    digits.push(((10 - sum % 10) % 10) as u8);
    digits.iter().map(|d| char::from(b'0' + d)).collect()
}

fn group4(number: &str, sep: char) -> String {
    let mut out = String::new();
    for (i, c) in number.chars().enumerate() {
        if i > 0 && i % 4 == 0 {
            out.push(sep);
        }
        out.push(c);
    }
    out
}

fn pem_body(rng: &mut Lcg, lines: usize) -> String {
    let mut body = String::new();
    for _ in 0..lines {
        body.push_str(&rng.chars(64, BASE64));
        body.push('\n');
    }
    body.push_str(&rng.chars(24, BASE64));
    body.push('\n');
    body
}

/// A planted secret: the text around it, and the secret's place in that text.
struct Plant {
    before: String,
    secret: String,
    after: String,
    category: Category,
}

fn plant(category: Category, before: impl Into<String>, secret: String, after: &str) -> Plant {
    Plant {
        before: before.into(),
        secret,
        after: after.to_owned(),
        category,
    }
}

fn secret(rng: &mut Lcg, n: usize) -> Plant {
    use Category::*;
    match n % 12 {
        0 => {
            let kind = rng.pick(&[
                "RSA PRIVATE KEY",
                "EC PRIVATE KEY",
                "OPENSSH PRIVATE KEY",
                "PRIVATE KEY",
            ]);
            let lines = 3 + rng.below(20);
            let body = pem_body(rng, lines);
            plant(
                PrivateKey,
                "$ cat key.pem\n",
                format!("-----BEGIN {kind}-----\n{body}-----END {kind}-----"),
                "",
            )
        }
        1 => plant(
            AwsAccessKey,
            "export AWS_ACCESS_KEY_ID=",
            format!("AKIA{}", rng.with_digit(16, UPPER_DIGITS)),
            "",
        ),
        2 => plant(
            AwsSecretKey,
            "aws_secret_access_key = ",
            rng.chars(40, BASE64),
            "",
        ),
        3 => plant(
            GithubToken,
            "GITHUB_TOKEN=",
            format!("{}{}", rng.pick(&["ghp_", "gho_", "ghs_"]), rng.alnum(36)),
            "",
        ),
        4 => plant(
            GitlabToken,
            "token for ci: ",
            format!("glpat-{}", rng.alnum(20)),
            " (rotated)",
        ),
        5 => plant(
            SlackToken,
            "SLACK_BOT=",
            format!(
                "xoxb-{}-{}-{}",
                rng.chars(11, b"0123456789"),
                rng.chars(12, b"0123456789"),
                rng.alnum(24)
            ),
            "",
        ),
        6 => plant(
            StripeKey,
            "stripe.api_key = '",
            format!("sk_live_{}", rng.alnum(24)),
            "'",
        ),
        7 => plant(
            Jwt,
            "Authorization: Bearer ",
            format!(
                "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ{}.{}",
                rng.chars(40, B64URL),
                rng.chars(43, B64URL)
            ),
            "",
        ),
        8 => plant(
            UrlPassword,
            format!("DATABASE_URL=postgres://app{}:", rng.below(100)),
            rng.alnum(14),
            "@db.internal.corp:5432/app",
        ),
        9 => plant(
            GenericSecret,
            format!(
                "{} = \"",
                rng.pick(&["api_key", "client_secret", "auth_token", "db_password"])
            ),
            rng.alnum(28),
            "\"",
        ),
        10 => plant(
            Email,
            "Author: Dana Whitfield <",
            format!(
                "{}.{}@{}",
                rng.pick(&["dana", "li", "omar", "ines"]),
                rng.below(1000),
                rng.pick(&["corpmail.io", "acme-corp.com", "mail.northwind.eu"])
            ),
            ">",
        ),
        _ => {
            let prefix = rng.pick(&["4", "51", "53", "2223"]);
            let number = card(rng, prefix, 16);
            plant(
                CardNumber,
                "card on file: ",
                group4(&number, if n % 24 == 11 { ' ' } else { '-' }),
                " exp 09/29",
            )
        }
    }
}

fn look_alike(rng: &mut Lcg, n: usize) -> String {
    match n % 20 {
        0 => "aws_access_key_id = AKIAIOSFODNN7EXAMPLE".to_owned(),
        1 => "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_owned(),
        2 => "GITHUB_TOKEN=ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx".to_owned(),
        3 => format!("commit {}", rng.chars(40, HEX)),
        4 => format!(
            "request_id={}-{}-{}-{}-{}",
            rng.chars(8, HEX),
            rng.chars(4, HEX),
            rng.chars(4, HEX),
            rng.chars(4, HEX),
            rng.chars(12, HEX)
        ),
        5 => format!("sha256:{}", rng.chars(64, HEX)),
        6 => "password = ${DB_PASSWORD}".to_owned(),
        7 => "postgres://user:password@localhost/db".to_owned(),
        8 => format!(
            "Contact: {}@example.com",
            rng.pick(&["jane", "bob", "support"])
        ),
        9 => format!("ssh git@github.com:org/repo{}.git", rng.below(100)),
        10 => {
            // One digit off: fails Luhn.
            let mut number = card(rng, "4", 16).into_bytes();
            number[15] = b'0' + (number[15] - b'0' + 1) % 10;
            format!("order {}", String::from_utf8(number).unwrap_or_default())
        }
        11 => format!("ts={}", 1_763_700_000_000_000_000u64 + rng.next()),
        12 => format!(
            "-----BEGIN PUBLIC KEY-----\n{}-----END PUBLIC KEY-----",
            pem_body(rng, 4)
        ),
        13 => format!(
            "-----BEGIN CERTIFICATE-----\n{}-----END CERTIFICATE-----",
            pem_body(rng, 6)
        ),
        14 => "token: self.token_value".to_owned(),
        15 => "sk_test_helper_function_name()".to_owned(),
        16 => "icon@2x.png and logo@3x.webp".to_owned(),
        17 => "-----BEGIN RSA PRIVATE KEY-----\n...\n-----END RSA PRIVATE KEY-----".to_owned(),
        18 => "card 4242 4242 4242 4242 (the processor's test card)".to_owned(),
        _ => format!("secret: dummy-secret-for-tests-{}", rng.below(10_000)),
    }
}

/// About `bytes` of text with `secrets` planted secrets and `look_alikes` look-alikes, spread
/// evenly, the same for a given `seed`.
pub fn generate(seed: u64, bytes: usize, secrets: usize, look_alikes: usize) -> Corpus {
    let mut rng = Lcg(seed);
    let mut text = String::with_capacity(bytes + 4096);
    let mut planted = Vec::with_capacity(secrets);
    let insertions = secrets + look_alikes;
    let every = bytes / insertions.max(1);
    let (mut s, mut l) = (0, 0);
    let mut next_insert = every / 2;
    while text.len() < bytes || s < secrets || l < look_alikes {
        if text.len() >= next_insert && (s < secrets || l < look_alikes) {
            // Interleave: secrets and look-alikes in proportion.
            let plant_secret = l >= look_alikes || (s < secrets && s * look_alikes <= l * secrets);
            if plant_secret {
                let p = secret(&mut rng, s);
                text.push_str(&p.before);
                let start = text.len();
                text.push_str(&p.secret);
                planted.push(Planted {
                    category: p.category,
                    start,
                    end: text.len(),
                });
                text.push_str(&p.after);
                s += 1;
            } else {
                text.push_str(&look_alike(&mut rng, l));
                l += 1;
            }
            text.push('\n');
            next_insert += every;
            continue;
        }
        text.push_str(rng.pick(FILLER));
        text.push('\n');
    }
    Corpus {
        text,
        planted,
        look_alikes,
    }
}
