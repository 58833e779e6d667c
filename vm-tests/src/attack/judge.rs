//! How one attack is judged. An error code alone proves nothing: a "blocked" verdict needs
//! EPERM/EACCES *and* a target that is verifiably intact; damage makes an attack ALLOWED
//! whatever the syscall returned; any other failure is a broken test (ERROR), not a block.

use std::io;

use super::report::Verdict;
use super::sys::{denial, describe, errno_name};

/// What an attack function returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub detail: String,
}

impl Outcome {
    pub fn blocked(errno: i32, detail: impl Into<String>) -> Outcome {
        Outcome {
            verdict: Verdict::Blocked(errno_name(errno)),
            detail: detail.into(),
        }
    }

    pub fn allowed(detail: impl Into<String>) -> Outcome {
        Outcome {
            verdict: Verdict::Allowed,
            detail: detail.into(),
        }
    }

    pub fn error(detail: impl Into<String>) -> Outcome {
        Outcome {
            verdict: Verdict::Error,
            detail: detail.into(),
        }
    }

    pub fn is_allowed(&self) -> bool {
        self.verdict == Verdict::Allowed
    }

    /// Adds what was done afterwards (a restored fixture, a cleanup that failed).
    pub fn note(mut self, note: &str) -> Outcome {
        if !note.is_empty() {
            if !self.detail.is_empty() {
                self.detail.push_str("; ");
            }
            self.detail.push_str(note);
        }
        self
    }
}

/// The state of what an attack went after, checked after the attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Intact,
    /// What happened to it.
    Damaged(String),
    /// It could not be checked: no verdict can be claimed.
    Unverifiable(String),
}

/// The verdict for one attempt `op` (a syscall name and what it was pointed at).
/// `result` is `Ok(what it achieved)` or the syscall's error.
pub fn judge(op: &str, result: io::Result<String>, target: Target) -> Outcome {
    match (result, target) {
        (Ok(done), Target::Damaged(damage)) => Outcome::allowed(format!("{op}: {done}; {damage}")),
        (Ok(done), _) => Outcome::allowed(format!("{op}: {done}")),
        (Err(e), Target::Damaged(damage)) => {
            Outcome::allowed(format!("{op} returned {} but {damage}", describe(&e)))
        }
        (Err(e), Target::Unverifiable(why)) => Outcome::error(format!(
            "{op} returned {}, and the target cannot be checked: {why}",
            describe(&e)
        )),
        (Err(e), Target::Intact) => match denial(&e) {
            Some(errno) => Outcome::blocked(errno, op),
            None => Outcome::error(format!("{op}: {}", describe(&e))),
        },
    }
}

/// For attacks whose damage is the success itself (a socket made, a secret read, a signal
/// delivered): nothing to check beyond the syscall's answer.
pub fn judge_call(op: &str, result: io::Result<String>) -> Outcome {
    judge(op, result, Target::Intact)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(e: i32) -> io::Result<String> {
        Err(io::Error::from_raw_os_error(e))
    }

    #[test]
    fn blocked_needs_a_denial_and_an_intact_target() {
        let o = judge("unlink(2)", err(libc::EPERM), Target::Intact);
        assert_eq!(o.verdict, Verdict::Blocked("EPERM".into()));
        let o = judge("unlink(2)", err(libc::EACCES), Target::Intact);
        assert_eq!(o.verdict, Verdict::Blocked("EACCES".into()));
        let o = judge(
            "unlink(2)",
            err(libc::EPERM),
            Target::Damaged("gone".into()),
        );
        assert_eq!(o.verdict, Verdict::Allowed);
        let o = judge(
            "unlink(2)",
            err(libc::EPERM),
            Target::Unverifiable("?".into()),
        );
        assert_eq!(o.verdict, Verdict::Error);
        let o = judge("unlink(2)", err(libc::ENOENT), Target::Intact);
        assert_eq!(o.verdict, Verdict::Error);
        assert!(o.detail.contains("ENOENT"), "{}", o.detail);
        let o = judge("unlink(2)", Ok("done".into()), Target::Intact);
        assert_eq!(o.verdict, Verdict::Allowed);
    }
}
