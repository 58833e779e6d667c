//! Judges a run from its console: the runner's protocol lines (`secops_vm_tests::protocol`)
//! and the kernel's own complaints. A run passes only if the kernel stayed healthy, the
//! runner announced its scenarios, every one of them reported, all passed, and the end
//! marker confirmed the count: silence is never success.

use secops_vm_tests::protocol::{self, Line, Outcome};

pub struct Report {
    /// The scenarios the runner announced, in order.
    pub expected: Vec<String>,
    /// What came back, in order.
    pub outcomes: Vec<Outcome>,
    /// Everything wrong with the run beyond failed scenarios: a panic, a hang, a missing
    /// or garbled result.
    pub problems: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
            && !self.outcomes.is_empty()
            && self.outcomes.iter().all(|o| o.passed)
    }

    /// The scenarios that reported a failure (those that never reported are `problems`).
    pub fn failed_scenarios(&self) -> Vec<&str> {
        self.outcomes
            .iter()
            .filter(|o| !o.passed)
            .map(|o| o.name.as_str())
            .collect()
    }

    /// (passed, failed) for the closing line: a scenario without a result counts as failed,
    /// and a broken run (a panic after every result, say) counts at least one failure, so
    /// the line never says "0 failed" for a run that failed.
    pub fn counts(&self) -> (usize, usize) {
        let passed = self.outcomes.iter().filter(|o| o.passed).count();
        let failed = self.expected.len().max(self.outcomes.len()) - passed;
        let failed = if failed == 0 && !self.passed() {
            1
        } else {
            failed
        };
        (passed, failed)
    }
}

/// `timed_out` is whether the harness killed qemu at its deadline (after `timeout_secs`).
pub fn evaluate(console: &str, timed_out: bool, timeout_secs: u64) -> Report {
    let mut report = Report {
        expected: Vec::new(),
        outcomes: Vec::new(),
        problems: Vec::new(),
    };
    let mut began = false;
    let mut ended = None;
    let mut running: Option<String> = None;
    for line in console.lines() {
        if let Some(problem) = kernel_trouble(line) {
            if !report.problems.contains(&problem) {
                report.problems.push(problem);
            }
        }
        match protocol::parse_line(line) {
            None => {}
            Some(Err(garbled)) => report.problems.push(garbled),
            Some(Ok(Line::Begin { scenarios })) => {
                if began {
                    report
                        .problems
                        .push("the runner began twice (did the guest restart?)".into());
                }
                began = true;
                report.expected = scenarios;
            }
            Some(Ok(Line::Start { name })) => running = Some(name),
            Some(Ok(Line::Result(outcome))) => {
                if !report.expected.contains(&outcome.name) {
                    report.problems.push(format!(
                        "a result for {}, which the runner did not announce",
                        outcome.name
                    ));
                } else if report.outcomes.iter().any(|o| o.name == outcome.name) {
                    report
                        .problems
                        .push(format!("two results for {}", outcome.name));
                }
                if running.as_deref() == Some(&outcome.name) {
                    running = None;
                }
                report.outcomes.push(outcome);
            }
            Some(Ok(Line::End { count })) => ended = Some(count),
        }
    }

    if timed_out {
        let during = running
            .as_deref()
            .map(|s| format!(" during scenario {s}"))
            .unwrap_or_default();
        report.problems.push(format!(
            "timed out after {timeout_secs} s{during}; qemu was killed"
        ));
    }
    if !began {
        report.problems.push(format!(
            "the runner never started (no {} line): the guest did not boot, /init failed, \
             or the runner could not be executed",
            protocol::BEGIN
        ));
        return report;
    }
    if report.expected.is_empty() {
        report
            .problems
            .push("the runner announced no scenarios".into());
    }
    if let Some(name) = &running {
        report.problems.push(format!(
            "scenario {name} started but never reported (crash or hang)"
        ));
    }
    for name in &report.expected {
        if !report.outcomes.iter().any(|o| &o.name == name) && running.as_ref() != Some(name) {
            report
                .problems
                .push(format!("no result for scenario {name}"));
        }
    }
    match ended {
        None => report.problems.push(format!(
            "the runner did not finish (no {} line)",
            protocol::END
        )),
        Some(count) if count != report.outcomes.len() => report.problems.push(format!(
            "the runner ended with {count} results but {} reached the host",
            report.outcomes.len()
        )),
        Some(_) => {}
    }
    report
}

/// A kernel message that fails the run whatever the scenarios said.
fn kernel_trouble(line: &str) -> Option<String> {
    // Our own lines may quote anything (a failure detail); only the kernel's count here.
    if protocol::parse_line(line).is_some() {
        return None;
    }
    // Firmware output can share the line (SeaBIOS leaves no newline before the kernel's).
    if let Some(at) = line.find("Kernel panic") {
        return Some(format!("the guest kernel reported: {}", line[at..].trim()));
    }
    let message = strip_timestamp(line);
    // A user process's fault is logged as "traps: comm[pid] general protection fault ..."
    // and is a scenario's business; the kernel's own starts the message.
    let fatal = message.starts_with("BUG:")
        || message.starts_with("Oops:")
        || message.starts_with("general protection fault");
    fatal.then(|| format!("the guest kernel reported: {}", message.trim()))
}

/// "[    4.613327] reboot: Power down" -> "reboot: Power down".
fn strip_timestamp(line: &str) -> &str {
    let line = line.trim_start();
    match line.strip_prefix('[').and_then(|rest| rest.split_once(']')) {
        Some((stamp, rest)) if stamp.trim().parse::<f64>().is_ok() => rest.trim_start(),
        _ => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "SeaBIOS (version 1.16.2-debian-1.16.2-1)
SECOPS-VM-BEGIN 2 mounts bpf-lsm-loads\r
SECOPS-VM-START mounts\r
SECOPS-RESULT mounts PASS 13 9 mounts with the right types\r
SECOPS-VM-START bpf-lsm-loads\r
SECOPS-RESULT bpf-lsm-loads PASS 922 BPF LSM: active (bpf in the LSM list)\r
SECOPS-VM-END 2\r
[    8.157490] reboot: Power down\r
";

    #[test]
    fn a_complete_run_passes() {
        let r = evaluate(GOOD, false, 240);
        assert!(r.passed(), "{:?}", r.problems);
        assert_eq!(r.expected, ["mounts", "bpf-lsm-loads"]);
        assert_eq!(r.outcomes.len(), 2);
        assert_eq!(r.outcomes[1].millis, 922);
    }

    #[test]
    fn a_failure_line_fails_the_run() {
        let console = GOOD.replace(
            "bpf-lsm-loads PASS 922 BPF LSM: active (bpf in the LSM list)",
            "bpf-lsm-loads FAIL 922 BPF LSM: inactive (bpf is not in the active LSM list)",
        );
        let r = evaluate(&console, false, 240);
        assert!(!r.passed());
        assert!(
            r.problems.is_empty(),
            "a failed scenario is not a run problem"
        );
        assert_eq!(r.counts(), (1, 1));
        assert_eq!(r.failed_scenarios(), ["bpf-lsm-loads"]);
        assert!(r.outcomes[1].detail.contains("inactive"));
    }

    #[test]
    fn a_kernel_panic_fails_even_with_every_result() {
        let console = format!(
            "{GOOD}Booting from ROM..\u{1b}[0m.[    9.1] Kernel panic - not syncing: Attempted to kill init!\n"
        );
        let r = evaluate(&console, false, 240);
        assert!(!r.passed());
        assert_eq!(
            r.problems,
            ["the guest kernel reported: Kernel panic - not syncing: Attempted to kill init!"]
        );
    }

    #[test]
    fn a_kernel_oops_fails_but_a_quoted_one_in_a_result_does_not() {
        let oops = format!("{GOOD}[    5.2] BUG: kernel NULL pointer dereference, address: 0\n");
        assert!(!evaluate(&oops, false, 240).passed());
        let gpf = format!(
            "{GOOD}[    5.2] general protection fault, probably for non-canonical address 0xdead: 0000 [#1]\n"
        );
        assert!(!evaluate(&gpf, false, 240).passed());
        let user_fault = format!(
            "{GOOD}[    5.2] traps: attack[93] general protection fault ip:401000 sp:7ffd error:0\n"
        );
        assert!(evaluate(&user_fault, false, 240).passed());
        let quoted = GOOD.replace(
            "9 mounts with the right types",
            "dmesg had no Kernel panic, no BUG:",
        );
        assert!(evaluate(&quoted, false, 240).passed());
    }

    #[test]
    fn a_timeout_names_the_scenario_that_hung() {
        let console = "SECOPS-VM-BEGIN 2 mounts bpf-lsm-loads
SECOPS-VM-START mounts
SECOPS-RESULT mounts PASS 13 ok
SECOPS-VM-START bpf-lsm-loads
";
        let r = evaluate(console, true, 240);
        assert!(!r.passed());
        let all = r.problems.join("\n");
        assert!(
            all.contains("timed out after 240 s during scenario bpf-lsm-loads"),
            "{all}"
        );
        assert!(
            all.contains("bpf-lsm-loads started but never reported"),
            "{all}"
        );
        assert!(all.contains("did not finish"), "{all}");
    }

    #[test]
    fn a_missing_end_marker_fails_without_a_timeout() {
        let console = GOOD.replace("SECOPS-VM-END 2\r\n", "");
        let r = evaluate(&console, false, 240);
        assert!(!r.passed());
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(r.problems[0].contains("did not finish"));
    }

    #[test]
    fn a_missing_scenario_is_named() {
        let console = GOOD
            .replace("SECOPS-VM-START bpf-lsm-loads\r\n", "")
            .replace(
                "SECOPS-RESULT bpf-lsm-loads PASS 922 BPF LSM: active (bpf in the LSM list)\r\n",
                "",
            );
        let r = evaluate(&console, false, 240);
        assert!(!r.passed());
        let all = r.problems.join("\n");
        assert!(
            all.contains("no result for scenario bpf-lsm-loads"),
            "{all}"
        );
        assert!(
            all.contains("ended with 2 results but 1 reached the host"),
            "{all}"
        );
    }

    #[test]
    fn no_begin_means_the_runner_never_ran() {
        let r = evaluate("SeaBIOS\n[ 1.0] Run /init as init process\n", false, 240);
        assert!(!r.passed());
        assert!(r.problems[0].contains("never started"), "{:?}", r.problems);
    }

    #[test]
    fn unannounced_duplicate_and_garbled_results_are_problems() {
        let console = GOOD.replace(
            "SECOPS-VM-END 2",
            "SECOPS-RESULT mounts PASS 1 again\nSECOPS-RESULT extra PASS 1 surprise\n\
             SECOPS-RESULT mounts MAYBE 1 what\nSECOPS-VM-END 4",
        );
        let all = evaluate(&console, false, 240).problems.join("\n");
        assert!(all.contains("two results for mounts"), "{all}");
        assert!(all.contains("did not announce"), "{all}");
        assert!(all.contains("malformed"), "{all}");
    }
}
