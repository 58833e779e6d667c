//! The guest's /init mounted what secops and the other scenarios need, each with the right
//! filesystem type (a directory that merely exists, or a bind of the wrong fs, would let
//! later scenarios fail for confusing reasons).

use std::collections::HashMap;

const WANTED: &[(&str, &str)] = &[
    ("/proc", "proc"),
    ("/sys", "sysfs"),
    ("/dev", "devtmpfs"),
    ("/tmp", "tmpfs"),
    ("/run", "tmpfs"),
    ("/sys/fs/cgroup", "cgroup2"),
    ("/sys/fs/bpf", "bpf"),
    ("/sys/kernel/tracing", "tracefs"),
    ("/sys/kernel/security", "securityfs"),
];

pub fn run() -> Result<String, String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
    let mounts = parse_mountinfo(&text);
    let problems: Vec<String> = WANTED
        .iter()
        .filter_map(|&(point, fstype)| match mounts.get(point) {
            Some(found) if found == fstype => None,
            Some(found) => Some(format!("{point} is {found}, not {fstype}")),
            None => Some(format!("{point} ({fstype}) is not mounted")),
        })
        .collect();
    if !problems.is_empty() {
        return Err(format!(
            "{}\n/proc/self/mountinfo:\n{text}",
            problems.join("; ")
        ));
    }
    let controllers = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
        .map_err(|e| format!("cgroup2 is mounted but cgroup.controllers is unreadable: {e}"))?;
    Ok(format!(
        "{} mounts with the right types; cgroup2 controllers: {}",
        WANTED.len(),
        controllers.trim()
    ))
}

/// Mount point → filesystem type; a later mount on the same point hides an earlier one, as
/// it does for path lookups.
fn parse_mountinfo(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| {
            // "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw": the mount
            // point is the fifth field; the type follows the " - " separator, after a
            // variable number of optional fields.
            let (before, after) = line.split_once(" - ")?;
            let point = before.split(' ').nth(4)?;
            let fstype = after.split(' ').next()?;
            Some((unescape(point), fstype.to_owned()))
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash in paths as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_give_point_and_type() {
        let text = "\
22 1 0:20 / /proc rw,nosuid - proc proc rw
25 23 0:23 / /sys/fs/cgroup rw,nosuid shared:4 master:1 - cgroup2 cgroup2 rw,nsdelegate
26 1 0:24 / /mnt/with\\040space rw - tmpfs tmpfs rw
27 1 0:25 / /proc rw - tmpfs over rw
";
        let m = parse_mountinfo(text);
        assert_eq!(m["/sys/fs/cgroup"], "cgroup2");
        assert_eq!(m["/mnt/with space"], "tmpfs");
        assert_eq!(m["/proc"], "tmpfs", "the later mount hides the earlier");
    }
}
