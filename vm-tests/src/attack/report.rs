//! The lines `secops-attack run` prints, formatted and parsed in one place so the program, the
//! host self-test and the VM scenario cannot disagree.
//!
//! ```text
//! BENIGN file-create-write-read ok
//! ATTACK unlink blocked EPERM unlink(2) protected/keep.txt
//! ATTACK truncate ALLOWED truncate(2) protected/keep.txt: succeeded; restored keep.txt
//! ATTACK bpf-detach ERROR bpf(BPF_LINK_DETACH): EINVAL (Invalid argument)
//! SUMMARY attacks=3 blocked=1 allowed=1 errors=1 benign=1 benign_failed=0
//! ```
//!
//! The first three words of an ATTACK line (and the fourth, the errno, of a `blocked` one) are
//! fixed; the rest of the line is a free-text detail naming the syscall used. A BENIGN line is
//! `BENIGN <name> ok` or `BENIGN <name> FAILED <detail>`. SUMMARY is the last line.

use std::fmt;

pub const ATTACK: &str = "ATTACK";
pub const BENIGN: &str = "BENIGN";
pub const SUMMARY: &str = "SUMMARY";

/// How an attack ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Failed with EPERM or EACCES (the symbolic name) and the target is verifiably intact.
    Blocked(String),
    /// It did the damage (even if a syscall also reported an error).
    Allowed,
    /// It failed for another reason: the test is broken, nothing was shown either way.
    Error,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttackResult {
    pub name: String,
    pub verdict: Verdict,
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BenignResult {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub attacks: usize,
    pub blocked: usize,
    pub allowed: usize,
    pub errors: usize,
    pub benign: usize,
    pub benign_failed: usize,
}

/// A whole run, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub attacks: Vec<AttackResult>,
    pub benign: Vec<BenignResult>,
    pub summary: Summary,
}

impl Report {
    pub fn attack(&self, name: &str) -> Option<&AttackResult> {
        self.attacks.iter().find(|a| a.name == name)
    }

    pub fn benign(&self, name: &str) -> Option<&BenignResult> {
        self.benign.iter().find(|b| b.name == name)
    }
}

/// A detail is the rest of one line: newlines (a child's stderr, say) and other control
/// characters would break the line protocol, so they become spaces and ` | `.
pub fn one_line(text: &str) -> String {
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    joined
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

impl fmt::Display for AttackResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let detail = one_line(&self.detail);
        match &self.verdict {
            Verdict::Blocked(errno) => write!(f, "{ATTACK} {} blocked {errno}", self.name)?,
            Verdict::Allowed => write!(f, "{ATTACK} {} ALLOWED", self.name)?,
            Verdict::Error => write!(f, "{ATTACK} {} ERROR", self.name)?,
        }
        if !detail.is_empty() {
            write!(f, " {detail}")?;
        }
        Ok(())
    }
}

impl fmt::Display for BenignResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ok {
            write!(f, "{BENIGN} {} ok", self.name)
        } else {
            write!(
                f,
                "{BENIGN} {} FAILED {}",
                self.name,
                one_line(&self.detail)
            )
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SUMMARY} attacks={} blocked={} allowed={} errors={} benign={} benign_failed={}",
            self.attacks, self.blocked, self.allowed, self.errors, self.benign, self.benign_failed
        )
    }
}

impl Summary {
    pub fn count(attacks: &[AttackResult], benign: &[BenignResult]) -> Summary {
        let of = |v: fn(&Verdict) -> bool| attacks.iter().filter(|a| v(&a.verdict)).count();
        Summary {
            attacks: attacks.len(),
            blocked: of(|v| matches!(v, Verdict::Blocked(_))),
            allowed: of(|v| matches!(v, Verdict::Allowed)),
            errors: of(|v| matches!(v, Verdict::Error)),
            benign: benign.len(),
            benign_failed: benign.iter().filter(|b| !b.ok).count(),
        }
    }
}

/// Names are lowercase letters, digits and `-`: one word on a line.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Parses a whole run. Lines that are none of ours (a child's output, kernel messages on a
/// console) are skipped; a garbled line of ours, a duplicate name, a missing summary, lines
/// after it, or a summary that does not match the lines is an error, so a truncated or
/// corrupted run cannot pass.
pub fn parse(output: &str) -> Result<Report, String> {
    let mut attacks: Vec<AttackResult> = Vec::new();
    let mut benign: Vec<BenignResult> = Vec::new();
    let mut summary = None;
    for line in output.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(&kind) = words.first() else { continue };
        if ![ATTACK, BENIGN, SUMMARY].contains(&kind) {
            continue;
        }
        if summary.is_some() {
            return Err(format!("a line after the summary: {line:?}"));
        }
        let rest = |n: usize| words.get(n..).map(|w| w.join(" ")).unwrap_or_default();
        match kind {
            ATTACK => {
                let (Some(&name), Some(&verdict)) = (words.get(1), words.get(2)) else {
                    return Err(format!("garbled attack line: {line:?}"));
                };
                let (verdict, detail) = match verdict {
                    "blocked" => match words.get(3) {
                        Some(errno) if errno.starts_with('E') => {
                            (Verdict::Blocked((*errno).to_owned()), rest(4))
                        }
                        _ => return Err(format!("blocked without an errno: {line:?}")),
                    },
                    "ALLOWED" => (Verdict::Allowed, rest(3)),
                    "ERROR" => (Verdict::Error, rest(3)),
                    _ => return Err(format!("unknown attack verdict: {line:?}")),
                };
                if !valid_name(name) || attacks.iter().any(|a| a.name == name) {
                    return Err(format!("bad or duplicate attack name: {line:?}"));
                }
                attacks.push(AttackResult {
                    name: name.to_owned(),
                    verdict,
                    detail,
                });
            }
            BENIGN => {
                let (Some(&name), Some(&state)) = (words.get(1), words.get(2)) else {
                    return Err(format!("garbled benign line: {line:?}"));
                };
                let ok = match state {
                    "ok" => true,
                    "FAILED" => false,
                    _ => return Err(format!("unknown benign state: {line:?}")),
                };
                if !valid_name(name) || benign.iter().any(|b| b.name == name) {
                    return Err(format!("bad or duplicate benign name: {line:?}"));
                }
                benign.push(BenignResult {
                    name: name.to_owned(),
                    ok,
                    detail: rest(3),
                });
            }
            _ => summary = Some(parse_summary(&words[1..]).ok_or(format!("garbled: {line:?}"))?),
        }
    }
    let summary = summary.ok_or("no SUMMARY line (the run did not finish)")?;
    let counted = Summary::count(&attacks, &benign);
    if summary != counted {
        return Err(format!(
            "the summary ({summary}) does not match the lines ({counted})"
        ));
    }
    Ok(Report {
        attacks,
        benign,
        summary,
    })
}

fn parse_summary(words: &[&str]) -> Option<Summary> {
    let mut s = Summary::default();
    let keys = [
        "attacks",
        "blocked",
        "allowed",
        "errors",
        "benign",
        "benign_failed",
    ];
    if words.len() != keys.len() {
        return None;
    }
    for (word, key) in words.iter().zip(keys) {
        let value = word.strip_prefix(key)?.strip_prefix('=')?.parse().ok()?;
        match key {
            "attacks" => s.attacks = value,
            "blocked" => s.blocked = value,
            "allowed" => s.allowed = value,
            "errors" => s.errors = value,
            "benign" => s.benign = value,
            _ => s.benign_failed = value,
        }
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attack(name: &str, verdict: Verdict, detail: &str) -> AttackResult {
        AttackResult {
            name: name.into(),
            verdict,
            detail: detail.into(),
        }
    }

    #[test]
    fn lines_round_trip() {
        let attacks = vec![
            attack("unlink", Verdict::Blocked("EPERM".into()), "unlink(2)"),
            attack("truncate", Verdict::Allowed, "truncate(2)\nsecond line"),
            attack("bpf-detach", Verdict::Error, ""),
        ];
        let benign = vec![
            BenignResult {
                name: "mkdir-rmdir".into(),
                ok: true,
                detail: String::new(),
            },
            BenignResult {
                name: "exec-allowed".into(),
                ok: false,
                detail: "exit 1".into(),
            },
        ];
        let mut text = String::from("noise from a child\n");
        for a in &attacks {
            text.push_str(&format!("{a}\n"));
        }
        for b in &benign {
            text.push_str(&format!("{b}\n"));
        }
        text.push_str(&format!("{}\n", Summary::count(&attacks, &benign)));
        assert!(text.contains("ATTACK truncate ALLOWED truncate(2) | second line\n"));
        assert!(text.contains("ATTACK bpf-detach ERROR\n"));
        let report = parse(&text).expect("parses");
        assert_eq!(report.attacks[0], attacks[0]);
        assert_eq!(report.attacks[1].detail, "truncate(2) | second line");
        assert_eq!(report.benign, benign);
        assert_eq!(report.summary.blocked, 1);
        assert_eq!(report.summary.benign_failed, 1);
    }

    #[test]
    fn truncated_or_inconsistent_runs_fail() {
        assert!(parse("ATTACK unlink ALLOWED x\n").is_err());
        assert!(parse(
            "ATTACK unlink ALLOWED x\nSUMMARY attacks=1 blocked=1 allowed=0 errors=0 benign=0 benign_failed=0\n"
        )
        .is_err());
        assert!(parse("ATTACK unlink blocked\nSUMMARY attacks=1 blocked=1 allowed=0 errors=0 benign=0 benign_failed=0\n").is_err());
        assert!(parse("ATTACK a ALLOWED\nATTACK a ALLOWED\nSUMMARY attacks=2 blocked=0 allowed=2 errors=0 benign=0 benign_failed=0\n").is_err());
        assert!(parse("SUMMARY attacks=0 blocked=0 allowed=0 errors=0 benign=0 benign_failed=0\nBENIGN x ok\n").is_err());
    }
}
