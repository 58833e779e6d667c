//! What `/proc` says about a process a door named, for people reading a ticket.

use crate::approvals::MAX_COMMAND_CHARS;

/// The command line of `pid` (arguments joined by spaces, control characters shown as
/// `\n`-style escapes so a ticket list stays one line per ticket, cut at
/// [`MAX_COMMAND_CHARS`]); `None` if the process is gone or has none (a kernel thread).
pub(crate) fn command_line(pid: Option<u32>) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{}/cmdline", pid?)).ok()?;
    let args: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).escape_debug().to_string())
        .collect();
    if args.is_empty() {
        return None;
    }
    let mut line = args.join(" ");
    if line.chars().count() > MAX_COMMAND_CHARS {
        line = line.chars().take(MAX_COMMAND_CHARS - 1).collect();
        line.push('…');
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    /// The command line once the child has exec'd (until then it is the test's own).
    fn settled(pid: u32, starts: &str) -> String {
        for _ in 0..200 {
            if let Some(line) = super::command_line(Some(pid)) {
                if line.starts_with(starts) {
                    return line;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("pid {pid} never ran {starts}");
    }

    #[test]
    fn a_command_line_is_one_line_and_bounded() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert_eq!(settled(child.id(), "sleep"), "sleep 30");
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(super::command_line(None), None);
        let mut multi = std::process::Command::new("sh")
            .args(["-c", "sleep 30; : 'a\nb'", "x".repeat(600).as_str()])
            .spawn()
            .unwrap();
        let line = settled(multi.id(), "sh -c");
        multi.kill().unwrap();
        multi.wait().unwrap();
        assert!(!line.contains('\n') && line.contains("\\n"), "{line}");
        assert_eq!(line.chars().count(), crate::approvals::MAX_COMMAND_CHARS);
    }
}
