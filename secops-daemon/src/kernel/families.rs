//! Program families: the units the loader loads and attaches on their own, so that a family
//! this kernel refuses (the verifier rejects a program, or an attach fails) leaves the other
//! families working, and says why in one line.

use std::fmt;

/// A group of programs that stand or fall together: one object, one layer of enforcement
/// or observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// cgroup connect4/6 and sendmsg4/6: the egress allowlist.
    Egress,
    /// sched_process_exec and sched_process_exit tracepoints.
    Exec,
    /// unlink/rmdir/rename syscall tracepoints (observation where BPF LSM is not loaded).
    Files,
    /// The BPF LSM programs: synchronous file, exec, socket and self-protection denials.
    Lsm,
}

impl Family {
    pub const ALL: [Family; 4] = [Family::Egress, Family::Exec, Family::Files, Family::Lsm];

    /// The BPF object (`secops_ebpf::PROGRAM_OBJECTS`) the family's programs are in.
    pub fn object(self) -> &'static str {
        match self {
            Family::Egress => "egress",
            Family::Exec => "exec",
            Family::Files => "files",
            Family::Lsm => "lsm",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Egress => "egress programs",
            Family::Exec => "exec tracepoints",
            Family::Files => "file tracepoints",
            Family::Lsm => "BPF LSM programs",
        })
    }
}

/// Where a family stands in this daemon's kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FamilyState {
    /// Not asked for (`LoadOptions` left it out).
    NotRequested,
    /// Every program verified and loaded; not attached yet.
    Loaded,
    /// Every program attached (or an adopted pinned link kept).
    Attached,
    /// The kernel refused it; the other families are unaffected.
    Failed(FamilyFailure),
}

impl FamilyState {
    pub fn is_attached(&self) -> bool {
        matches!(self, FamilyState::Attached)
    }
}

/// Why a family is not working: what was being done to which program, the one line that
/// says why (for a program the verifier rejected, the verifier's own error line), and the
/// whole error (with the verifier's log) for the daemon's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FamilyFailure {
    /// "loading" or "attaching".
    pub step: &'static str,
    pub program: Option<&'static str>,
    pub reason: String,
    pub detail: String,
}

impl fmt::Display for FamilyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.program {
            Some(program) => write!(f, "{} {program} failed: {}", self.step, self.reason),
            None => write!(f, "{} failed: {}", self.step, self.reason),
        }
    }
}

/// The line of a verifier log that says why the program was refused. The verifier prints
/// its trace (instructions, register states, source lines), then the error, then
/// statistics; so it is the last line that is neither statistics nor trace.
pub fn verifier_error_line(log: &str) -> Option<String> {
    const STATISTICS: &[&str] = &[
        "verification time",
        "stack depth",
        "processed ",
        "insns processed",
        "max_states_per_insn",
        "-- END PROG LOAD LOG --",
    ];
    log.lines()
        .rev()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .filter(|line| !STATISTICS.iter().any(|s| line.starts_with(s)))
        .find(|line| !is_trace(line))
        .map(str::to_owned)
}

/// An instruction (`12: (85) call ...`), a register state (`R1=ctx()`, `frame1: ...`,
/// `; source @ file.c:12`) or a branch (`from 4 to 9: ...`) line of a verifier log.
fn is_trace(line: &str) -> bool {
    let instruction = line
        .split_once(": ")
        .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    let register = line.starts_with('R')
        && line[1..].starts_with(|c: char| c.is_ascii_digit())
        && line.contains('=');
    instruction
        || register
        || line.starts_with(';')
        || line.starts_with("frame")
        || line.starts_with("from ")
        || line.starts_with("func#")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verifier_error_line_is_found_in_each_kernel_s_log() {
        // Debian 11's 5.10, 13's 6.12.118 and sid's 7.2, as each refused a program.
        let bullseye = "\
func#0 @0
0: R1=ctx(id=0,off=0,imm=0) R10=fp0
; __u64 id = bpf_get_current_ancestor_cgroup_id(cfg->agent_level);
11: (85) call bpf_get_current_ancestor_cgroup_id#123
unknown func bpf_get_current_ancestor_cgroup_id#123
verification time 4567 usec
stack depth 4+0+0+0+0
processed 11 insns (limit 1000000) max_states_per_insn 0 total_states 1 peak_states 1 mark_read 1
";
        assert_eq!(
            verifier_error_line(bullseye).as_deref(),
            Some("unknown func bpf_get_current_ancestor_cgroup_id#123")
        );
        let trixie = "\
 R0_w=scalar(id=15) R6=ctx() R10=fp0 fp-8=mmmm???? fp-16=mmmmmmmm
; } @ lsm.bpf.c:307
29: (95) exit
At program exit the register R0 has unknown scalar value should have been in [-4095, 0]
verification time 14177 usec
stack depth 16+104+16+0+0
processed 169 insns (limit 1000000) max_states_per_insn 1 total_states 15 peak_states 15 mark_read 7
";
        assert_eq!(
            verifier_error_line(trixie).as_deref(),
            Some("At program exit the register R0 has unknown scalar value should have been in [-4095, 0]")
        );
        let sid = "\
56: (79) r2 = *(u64 *)(r7 +24)        ; R2=trusted_ptr_or_null_sock(id=7) R7=trusted_ptr_socket()
60: (69) r9 = *(u16 *)(r2 +540)
R2 invalid mem access 'trusted_ptr_or_null_'
verification time 31366 usec
stack depth 104+0 max 0
insns processed 59
";
        assert_eq!(
            verifier_error_line(sid).as_deref(),
            Some("R2 invalid mem access 'trusted_ptr_or_null_'")
        );
        assert_eq!(verifier_error_line(""), None);
    }
}
