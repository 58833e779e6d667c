//! The output scanner against its corpora: every true positive found with the right category
//! and nothing else, nothing at all on the look-alikes, and the response policies.

use std::collections::BTreeMap;

use secops_common::AutonomyLevel;
use secops_daemon::scan::{Applied, Category, ResponsePolicy, Scanner, TierPolicy};

/// Blocks of `### <label>` followed by text, up to the next `###` line.
fn corpus(name: &str) -> Vec<(String, String)> {
    let path = format!("{}/tests/scan-corpus/{name}", env!("CARGO_MANIFEST_DIR"));
    let raw = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut blocks: Vec<(String, String)> = Vec::new();
    for line in raw.lines() {
        if let Some(label) = line.strip_prefix("### ") {
            blocks.push((label.to_owned(), String::new()));
        } else if let Some((_, text)) = blocks.last_mut() {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(line);
        }
    }
    assert!(!blocks.is_empty(), "{path} has no blocks");
    blocks
}

fn category(name: &str) -> Category {
    serde_json::from_value(serde_json::Value::String(name.to_owned()))
        .unwrap_or_else(|e| panic!("unknown category {name}: {e}"))
}

#[test]
fn finds_every_true_positive_and_only_it() {
    let scanner = Scanner::new();
    let blocks = corpus("true-positives.txt");
    let mut covered = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for (label, text) in &blocks {
        let want = category(label);
        covered.insert(want);
        let found = scanner.scan(text);
        let cats: Vec<Category> = found.iter().map(|f| f.category).collect();
        if cats != [want] {
            failures.push(format!("{label}: found {cats:?} in {text:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        covered.len(),
        Category::ALL.len(),
        "the corpus must exercise every category"
    );
}

#[test]
fn true_positive_spans_cover_the_secret() {
    // The span is what gets redacted: check it holds the secret, not just the line.
    let scanner = Scanner::new();
    let text = "DATABASE_URL=postgres://app:Zq81mVx0Lr4@db.internal.corp:5432/app";
    let f = scanner.scan(text);
    assert_eq!(f.len(), 1);
    assert_eq!(&text[f[0].start..f[0].end], "Zq81mVx0Lr4");
    let text = "key ghp_aB3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3kM5 end";
    let f = scanner.scan(text);
    assert_eq!(&text[f[0].start..f[0].end], &text[4..44]);
}

#[test]
fn reports_nothing_on_look_alikes() {
    let scanner = Scanner::new();
    let mut failures = Vec::new();
    for (label, text) in corpus("look-alikes.txt") {
        let found = scanner.scan(&text);
        if !found.is_empty() {
            let spans: Vec<String> = found
                .iter()
                .map(|f| format!("{}={:?}", f.category, &text[f.start..f.end]))
                .collect();
            failures.push(format!("{label}: {}", spans.join(", ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn look_alikes_concatenated_stay_quiet() {
    // Neighbouring blocks must not combine into something that looks like a secret.
    let joined: Vec<String> = corpus("look-alikes.txt")
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    for sep in ["\n", " ", "\n\n"] {
        let text = joined.join(sep);
        let found = Scanner::new().scan(&text);
        let spans: Vec<&str> = found.iter().map(|f| &text[f.start..f.end]).collect();
        assert!(found.is_empty(), "separator {sep:?}: {spans:?}");
    }
}

#[test]
fn the_whole_corpus_at_once_finds_each_block() {
    // Concatenated, the blocks must not merge into or hide each other.
    let scanner = Scanner::new();
    let blocks = corpus("true-positives.txt");
    let joined: String = blocks
        .iter()
        .map(|(_, t)| t.as_str())
        .collect::<Vec<_>>()
        .join("\n\n");
    let mut want: BTreeMap<Category, usize> = BTreeMap::new();
    for (label, _) in &blocks {
        *want.entry(category(label)).or_insert(0) += 1;
    }
    assert_eq!(Scanner::count(&scanner.scan(&joined)), want);
}

#[test]
fn findings_are_sorted_and_disjoint_on_mixed_text() {
    let scanner = Scanner::new();
    let text = "a@corp.io 4556737586899855 x@y.com b@corp.io sk_live_4eC39HqLyjWDarjtT1zdp7dc";
    let f = scanner.scan(text);
    assert!(f.windows(2).all(|w| w[0].end <= w[1].start), "{f:?}");
    assert_eq!(f.len(), 5);
}

const SECRET_TEXT: &str = "login ok\ntoken = q8Vz3kLm0PxR7tYw2NbCq8Vz\nmail dana@corpmail.io\n";

#[test]
fn redact_replaces_each_finding_with_its_marker() {
    let out = Scanner::new().respond(SECRET_TEXT, &ResponsePolicy::Redact, AutonomyLevel::Semi);
    assert_eq!(out.action, Applied::Redacted);
    assert_eq!(
        out.text.as_deref(),
        Some("login ok\ntoken = [REDACTED:generic_secret]\nmail [REDACTED:email]\n")
    );
    assert_eq!(
        out.findings,
        BTreeMap::from([(Category::GenericSecret, 1), (Category::Email, 1)])
    );
}

#[test]
fn outcome_never_contains_the_secret() {
    let out = Scanner::new().respond(SECRET_TEXT, &ResponsePolicy::Redact, AutonomyLevel::Full);
    let json = serde_json::to_string(&out).expect("serialize");
    assert!(!json.contains("q8Vz3kLm0PxR7tYw2NbCq8Vz"), "{json}");
    assert!(!json.contains("dana@corpmail.io"), "{json}");
}

#[test]
fn withhold_and_log_only() {
    let s = Scanner::new();
    let out = s.respond(SECRET_TEXT, &ResponsePolicy::Withhold, AutonomyLevel::Full);
    assert_eq!((out.text, out.action), (None, Applied::Withheld));
    assert_eq!(out.findings.values().sum::<usize>(), 2);

    let out = s.respond(SECRET_TEXT, &ResponsePolicy::LogOnly, AutonomyLevel::Full);
    assert_eq!(out.text.as_deref(), Some(SECRET_TEXT));
    assert_eq!(out.action, Applied::LoggedOnly);
    assert_eq!(out.findings.values().sum::<usize>(), 2);
}

#[test]
fn clean_output_passes_unchanged_under_every_policy() {
    let s = Scanner::new();
    for policy in [
        ResponsePolicy::Redact,
        ResponsePolicy::Withhold,
        ResponsePolicy::LogOnly,
    ] {
        let out = s.respond("nothing to see", &policy, AutonomyLevel::Locked);
        assert_eq!(out.text.as_deref(), Some("nothing to see"));
        assert_eq!(out.action, Applied::Clean);
        assert!(out.findings.is_empty());
    }
}

#[test]
fn autonomy_tiered_policy_parses_and_applies_per_level() {
    let yaml =
        "autonomy-tiered: {full: log-only, semi: redact, supervised: redact, locked: withhold}";
    let policy: ResponsePolicy = serde_yaml::from_str(yaml).expect("parse");
    let s = Scanner::new();
    let action = |a| s.respond(SECRET_TEXT, &policy, a).action;
    assert_eq!(action(AutonomyLevel::Full), Applied::LoggedOnly);
    assert_eq!(action(AutonomyLevel::Semi), Applied::Redacted);
    assert_eq!(action(AutonomyLevel::Supervised), Applied::Redacted);
    assert_eq!(action(AutonomyLevel::Locked), Applied::Withheld);

    let json = serde_json::to_value(&policy).expect("serialize");
    assert_eq!(json["autonomy-tiered"]["full"], "log-only");
}

#[test]
fn policy_names_and_default() {
    assert_eq!(ResponsePolicy::default(), ResponsePolicy::Redact);
    for (name, want) in [
        ("redact", ResponsePolicy::Redact),
        ("withhold", ResponsePolicy::Withhold),
        ("log-only", ResponsePolicy::LogOnly),
    ] {
        let got: ResponsePolicy = serde_yaml::from_str(name).expect(name);
        assert_eq!(got, want);
    }
    assert!(serde_yaml::from_str::<ResponsePolicy>("log_only").is_err());
    assert!(serde_yaml::from_str::<ResponsePolicy>("autonomy-tiered: {full: nope}").is_err());
    // Tiers do not nest.
    assert!(serde_yaml::from_str::<ResponsePolicy>(
        "autonomy-tiered: {full: {autonomy-tiered: {}}}"
    )
    .is_err());
}

#[test]
fn a_policy_that_cannot_be_applied_withholds() {
    let policy = ResponsePolicy::AutonomyTiered(BTreeMap::from([(
        AutonomyLevel::Full,
        TierPolicy::LogOnly,
    )]));
    let out = Scanner::new().respond(SECRET_TEXT, &policy, AutonomyLevel::Semi);
    assert_eq!(out.action, Applied::Withheld);
    assert_eq!(out.text, None);
    assert_eq!(out.findings.values().sum::<usize>(), 2);
}

/// A real Ed25519 key (PKCS#8 PEM, as `openssl` and most libraries write it) from `seed`.
fn ed25519_pem(seed: [u8; 32]) -> String {
    use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePrivateKey};
    ed25519_dalek::SigningKey::from_bytes(&seed)
        .to_pkcs8_pem(LineEnding::LF)
        .expect("encode the key")
        .to_string()
}

fn private_keys_in(scanner: &Scanner, text: &str) -> usize {
    Scanner::count(&scanner.scan(text))
        .get(&Category::PrivateKey)
        .copied()
        .unwrap_or(0)
}

#[test]
fn private_keys_whose_base64_spells_a_marker_are_still_keys() {
    // The PKCS#8 header is 16 bytes, so seed bytes 2..5 are one base64 quantum: these bytes
    // spell `xxxx`, `XXXX` and `xXxX` in the key's body. Any 32 bytes are a valid key.
    let scanner = Scanner::new();
    for (quantum, spelled) in [
        ([0xc7, 0x1c, 0x71], "xxxx"),
        ([0x5d, 0x75, 0xd7], "XXXX"),
        ([0xc5, 0x7c, 0x57], "xXxX"),
    ] {
        let mut seed = [0x5a; 32];
        seed[2..5].copy_from_slice(&quantum);
        let pem = ed25519_pem(seed);
        assert!(pem.contains(spelled), "{pem}");
        assert_eq!(private_keys_in(&scanner, &pem), 1, "{pem}");
    }
}

#[test]
fn freshly_generated_private_keys_are_found() {
    use rand_core::{OsRng, RngCore};
    let scanner = Scanner::new();
    for _ in 0..500 {
        let mut seed = [0u8; 32];
        OsRng.fill_bytes(&mut seed);
        let pem = ed25519_pem(seed);
        assert_eq!(private_keys_in(&scanner, &pem), 1, "{pem}");
    }
    // RSA, EC and OpenSSH keys as the usual tools write them.
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut keys = Vec::new();
    for args in [
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ][..],
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ],
        &["genrsa", "-traditional", "2048"],
        &["ecparam", "-name", "prime256v1", "-genkey", "-noout"],
    ] {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("openssl {args:?} (Debian package openssl): {e}"));
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
        keys.push(String::from_utf8(out.stdout).expect("PEM is text"));
    }
    let path = dir.path().join("id_ed25519");
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("ssh-keygen (Debian package openssh-client): {e}"));
    assert!(out.status.success(), "ssh-keygen: {out:?}");
    keys.push(std::fs::read_to_string(&path).expect("read the OpenSSH key"));
    for key in &keys {
        assert_eq!(private_keys_in(&scanner, key), 1, "{key}");
    }
}

#[test]
fn example_private_keys_are_judged_on_their_armour() {
    let scanner = Scanner::new();
    let key = ed25519_pem([7; 32]);
    assert_eq!(private_keys_in(&scanner, &key), 1);
    for example in [
        // A marker on the armour, or in a header line.
        key.replace("PRIVATE KEY-----\n", "PRIVATE KEY----- (example)\n"),
        key.replacen(
            "PRIVATE KEY-----\n",
            "PRIVATE KEY-----\nComment: \"dummy key for the docs\"\n",
            1,
        ),
        // Masked by hand.
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            "X".repeat(64)
        ),
        // RFC 8410's example key, copied into countless test suites.
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n".to_owned(),
    ] {
        assert_eq!(private_keys_in(&scanner, &example), 0, "{example}");
    }
}

/// 4 MiB of ordinary output with 600 planted secrets and 500 look-alikes: every secret found
/// with its category, and nothing else.
#[test]
fn planted_corpus_recall_and_false_positives() {
    let corpus = secops_daemon::scan::corpus::generate(21, 4 << 20, 600, 500);
    assert_eq!(corpus.planted.len(), 600);
    assert!(corpus.text.len() >= 4 << 20);
    let findings = Scanner::new().scan(&corpus.text);
    let score = corpus.score(&findings);
    println!(
        "recall {}/{}, {} false positives: {:?}",
        score.found,
        score.planted,
        score.false_positives.len(),
        score.false_positives
    );
    assert_eq!(score.found, score.planted, "recall");
    assert!(
        score.false_positives.is_empty(),
        "{:?}",
        score.false_positives
    );
}

/// Anchors are examined wherever they start, also inside or right after another literal:
/// a key name glued to an AWS-like prefix, a PEM armour after a longer run of dashes, the
/// webhook host in any case, `:=`/`=>` separators and names in either case.
#[test]
fn anchors_next_to_other_literals_are_still_examined() {
    let scanner = Scanner::new();
    let categories =
        |text: &str| -> Vec<Category> { scanner.scan(text).iter().map(|f| f.category).collect() };
    assert_eq!(
        categories("ACCAuth = q8Vz3kLm0PxR7tYw2NbCq8Vz3kLm"),
        [Category::GenericSecret]
    );
    assert_eq!(
        categories("export MY_API_KEY:=q8Vz3kLm0PxR7tYw2NbC and PassWord => 'Zq81mVx0Lr4aa9'"),
        [Category::GenericSecret, Category::GenericSecret]
    );
    assert_eq!(
        categories("see HOOKS.Slack.com/services/T0D74CC7HN5/B1Y6IIWJFN6/fwfuZ9QV3QKmWfARnMhK4JmT"),
        [Category::SlackToken]
    );
    let pem = ed25519_pem([7; 32]).replacen("-----BEGIN", "--------begin", 1);
    assert_eq!(private_keys_in(&scanner, &pem), 1, "{pem}");
}
