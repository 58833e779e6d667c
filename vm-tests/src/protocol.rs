//! The lines the guest runner prints on the serial console and `cargo xtask vm-test` reads
//! back. One definition for both sides, so the format cannot drift.
//!
//! ```text
//! SECOPS-VM-BEGIN 2 mounts bpf-lsm-loads
//! SECOPS-VM-START mounts
//! SECOPS-RESULT mounts PASS 3 every mount is there
//! SECOPS-VM-START bpf-lsm-loads
//! SECOPS-RESULT bpf-lsm-loads FAIL 812 BPF LSM: inactive (...)
//! SECOPS-VM-END 2
//! ```
//!
//! BEGIN names every scenario the runner will run, so the host can name the ones that never
//! reported; START says which one was running when a guest hung or crashed; RESULT carries
//! the verdict, the guest-side duration in milliseconds and a one-line detail; END carries the
//! number of results, so a truncated console cannot pass. Kernel messages share the console,
//! so a marker is recognised anywhere in a line, not only at its start.

pub const BEGIN: &str = "SECOPS-VM-BEGIN";
pub const START: &str = "SECOPS-VM-START";
pub const RESULT: &str = "SECOPS-RESULT";
pub const END: &str = "SECOPS-VM-END";

/// Kernel command line parameter naming the scenarios to run, comma-separated (the
/// harness's `--only`). Dotted, so the kernel ignores it instead of passing it to init.
pub const ONLY_PARAM: &str = "secops_vm.only";

/// The scenario that needs a boot with `bpf` left out of the kernel's `lsm=` list: the host
/// (`cargo xtask vm-test`) boots one kernel a second time for it.
pub const DEGRADED_LSM: &str = "degraded-lsm";

/// One protocol line, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    Begin { scenarios: Vec<String> },
    Start { name: String },
    Result(Outcome),
    End { count: usize },
}

/// One scenario's verdict as the guest reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub name: String,
    pub passed: bool,
    pub millis: u64,
    pub detail: String,
}

pub fn begin_line(scenarios: &[&str]) -> String {
    let mut line = format!("{BEGIN} {}", scenarios.len());
    for name in scenarios {
        line.push(' ');
        line.push_str(name);
    }
    line
}

pub fn start_line(name: &str) -> String {
    format!("{START} {name}")
}

pub fn result_line(outcome: &Outcome) -> String {
    format!(
        "{RESULT} {} {} {} {}",
        outcome.name,
        if outcome.passed { "PASS" } else { "FAIL" },
        outcome.millis,
        one_line(&outcome.detail)
    )
    .trim_end()
    .to_owned()
}

pub fn end_line(count: usize) -> String {
    format!("{END} {count}")
}

/// Squeezes a detail onto one console line: a newline inside it would cut the result in two.
pub fn one_line(detail: &str) -> String {
    detail
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A scenario name must survive being a space-separated word in BEGIN.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The protocol line in one console line, if there is one. A line that carries a marker but
/// does not parse is `Err` with what is wrong, so a garbled result is reported, not ignored.
pub fn parse_line(line: &str) -> Option<Result<Line, String>> {
    let line = line.trim_end_matches(['\r', '\n']);
    // RESULT first: no other marker is a prefix of it, but BEGIN/START/END share "SECOPS-VM-".
    for marker in [RESULT, BEGIN, START, END] {
        if let Some(at) = line.find(marker) {
            let rest = &line[at + marker.len()..];
            if !(rest.is_empty() || rest.starts_with(' ')) {
                continue;
            }
            return Some(
                parse_fields(marker, rest.trim_start())
                    .map_err(|why| format!("malformed {marker} line ({why}): {:?}", &line[at..])),
            );
        }
    }
    None
}

fn parse_fields(marker: &str, rest: &str) -> Result<Line, String> {
    match marker {
        BEGIN => {
            let mut words = rest.split_whitespace();
            let count: usize = words
                .next()
                .ok_or("no count")?
                .parse()
                .map_err(|_| "the count is not a number")?;
            let scenarios: Vec<String> = words.map(str::to_owned).collect();
            if scenarios.len() != count {
                return Err(format!(
                    "announces {count} scenarios but names {}",
                    scenarios.len()
                ));
            }
            Ok(Line::Begin { scenarios })
        }
        START => {
            let name = rest.trim();
            if !valid_name(name) {
                return Err("bad scenario name".into());
            }
            Ok(Line::Start {
                name: name.to_owned(),
            })
        }
        RESULT => {
            let mut fields = rest.splitn(4, ' ');
            let name = fields.next().filter(|n| valid_name(n)).ok_or("no name")?;
            let passed = match fields.next() {
                Some("PASS") => true,
                Some("FAIL") => false,
                _ => return Err("verdict is neither PASS nor FAIL".into()),
            };
            let millis = fields
                .next()
                .and_then(|m| m.parse().ok())
                .ok_or("no duration")?;
            Ok(Line::Result(Outcome {
                name: name.to_owned(),
                passed,
                millis,
                detail: fields.next().unwrap_or("").trim().to_owned(),
            }))
        }
        END => Ok(Line::End {
            count: rest
                .trim()
                .parse()
                .map_err(|_| "the count is not a number")?,
        }),
        _ => Err("unknown marker".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(passed: bool, detail: &str) -> Outcome {
        Outcome {
            name: "bpf-lsm-loads".into(),
            passed,
            millis: 812,
            detail: detail.into(),
        }
    }

    #[test]
    fn every_line_round_trips() {
        let begin = begin_line(&["mounts", "bpf-lsm-loads"]);
        assert_eq!(
            parse_line(&begin),
            Some(Ok(Line::Begin {
                scenarios: vec!["mounts".into(), "bpf-lsm-loads".into()]
            }))
        );
        assert_eq!(
            parse_line(&start_line("mounts")),
            Some(Ok(Line::Start {
                name: "mounts".into()
            }))
        );
        for passed in [true, false] {
            let o = outcome(passed, "BPF LSM: active (bpf in the LSM list)");
            assert_eq!(parse_line(&result_line(&o)), Some(Ok(Line::Result(o))));
        }
        assert_eq!(parse_line(&end_line(2)), Some(Ok(Line::End { count: 2 })));
    }

    #[test]
    fn a_multi_line_detail_stays_on_one_line() {
        let line = result_line(&outcome(false, "first\n\n  second\r\nthird\twith tab"));
        assert!(!line.contains('\n') && !line.contains('\r') && !line.contains('\t'));
        let Some(Ok(Line::Result(o))) = parse_line(&line) else {
            panic!("{line}")
        };
        assert_eq!(o.detail, "first | second | third with tab");
    }

    #[test]
    fn an_empty_detail_parses() {
        let line = result_line(&outcome(true, ""));
        assert_eq!(line, "SECOPS-RESULT bpf-lsm-loads PASS 812");
        assert_eq!(parse_line(&line), Some(Ok(Line::Result(outcome(true, "")))));
    }

    #[test]
    fn markers_are_found_after_kernel_noise_and_carriage_returns() {
        assert_eq!(
            parse_line("[    4.2] random: crng init\u{1b}[0mSECOPS-VM-END 3\r"),
            Some(Ok(Line::End { count: 3 }))
        );
    }

    #[test]
    fn ordinary_lines_are_not_protocol() {
        assert_eq!(parse_line("[    0.000000] Linux version 6.1.0"), None);
        assert_eq!(parse_line("SECOPS-VM-BEGINNING of something"), None);
    }

    #[test]
    fn garbled_lines_are_errors() {
        for line in [
            "SECOPS-RESULT mounts MAYBE 3 detail",
            "SECOPS-RESULT mounts PASS soon",
            "SECOPS-VM-BEGIN 3 mounts",
            "SECOPS-VM-END many",
        ] {
            assert!(matches!(parse_line(line), Some(Err(_))), "{line}");
        }
    }
}
