//! `cargo xtask package`: the Debian package, built with dpkg-deb from a staged tree (no
//! debhelper, no extra cargo tool): the release `secops` binary (stripped), the default
//! policy and its includes in /etc/secops as conffiles, the systemd unit, man pages and shell
//! completions made by the binary itself, the maintainer scripts, copyright and changelog.
//! Depends comes from dpkg-shlibdeps. What goes where is [`layout`]; the files that are not
//! generated live in `secops-daemon/packaging/debian/`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Where `cargo xtask package` writes the .deb unless told (`--out DIR`).
pub const DEFAULT_OUT: &str = "debian";

pub fn package(args: &[String], workspace: &Path, target: &Path) -> Result<()> {
    let mut out = target.join(DEFAULT_OUT);
    let mut binary = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => out = PathBuf::from(args.next().context("--out needs a directory")?),
            "--binary" => {
                binary = Some(PathBuf::from(args.next().context("--binary needs a path")?))
            }
            other => bail!(
                "package: unknown argument {other:?} (usage: cargo xtask package [--out DIR] \
                 [--binary PATH: package this secops binary instead of building one])"
            ),
        }
    }
    let binary = match binary {
        Some(binary) => binary,
        None => crate::release_secops()?,
    };
    let deb = build(&binary, workspace, &out)?;
    println!("{}", deb.display());
    Ok(())
}

/// The .deb [`package`] made in the default place.
pub fn built_deb(target: &Path) -> Result<PathBuf> {
    let arch = output("dpkg", &["--print-architecture"])?;
    Ok(deb_path(&target.join(DEFAULT_OUT), &arch))
}

fn deb_path(out: &Path, arch: &str) -> PathBuf {
    out.join(format!("secops_{}_{arch}.deb", env!("CARGO_PKG_VERSION")))
}

/// Stages the tree below `out/stage` and builds `out/secops_VERSION_ARCH.deb`.
pub fn build(binary: &Path, workspace: &Path, out: &Path) -> Result<PathBuf> {
    let version = env!("CARGO_PKG_VERSION");
    let arch = output("dpkg", &["--print-architecture"])?;
    let stage = out.join("stage");
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    }
    let packaging = workspace.join("secops-daemon/packaging/debian");
    let policies = workspace.join("policies");

    let bin = stage.join("usr/bin/secops");
    make_parent(&bin)?;
    run(Command::new("strip")
        .args(["--strip-unneeded", "--remove-section=.comment", "-o"])
        .arg(&bin)
        .arg(binary))?;
    set_mode(&bin, 0o755)?;

    // The default policy and what it includes, with the same layout, so its relative
    // includes hold. Every file below /etc is a conffile: dpkg keeps a person's edits.
    let mut conffiles = Vec::new();
    for (from, to) in policy_files(&policies)? {
        let dest = stage.join(to.strip_prefix("/").unwrap_or(&to));
        install(&from, &dest, 0o644)?;
        conffiles.push(to);
    }
    let notifications = PathBuf::from("/etc/secops/notifications.yaml");
    install(
        &packaging.join("notifications.yaml"),
        &stage.join("etc/secops/notifications.yaml"),
        0o644,
    )?;
    conffiles.push(notifications);
    install(
        &packaging.join("secops.service"),
        &stage.join("lib/systemd/system/secops.service"),
        0o644,
    )?;
    let dashboard = workspace.join("secops-daemon/packaging/grafana/secops-dashboard.json");
    if dashboard.exists() {
        install(
            &dashboard,
            &stage.join("usr/share/secops/grafana/secops-dashboard.json"),
            0o644,
        )?;
    }

    // Man pages and completions from the binary being packaged: they describe exactly it.
    let man_raw = out.join("man");
    if man_raw.exists() {
        fs::remove_dir_all(&man_raw)?;
    }
    run(Command::new(binary).arg("man").arg(&man_raw))?;
    let man_dir = stage.join("usr/share/man/man1");
    fs::create_dir_all(&man_dir)?;
    let mut pages: Vec<PathBuf> = fs::read_dir(&man_raw)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    pages.sort();
    for page in &pages {
        let name = page.file_name().context("man page name")?;
        let dest = man_dir.join(format!("{}.gz", name.to_string_lossy()));
        gzip(page, &dest)?;
    }
    for (shell, path) in [
        ("bash", "usr/share/bash-completion/completions/secops"),
        ("zsh", "usr/share/zsh/vendor-completions/_secops"),
        ("fish", "usr/share/fish/vendor_completions.d/secops.fish"),
    ] {
        let script = output_bytes(Command::new(binary).args(["completions", shell]))?;
        let dest = stage.join(path);
        make_parent(&dest)?;
        fs::write(&dest, script)?;
        set_mode(&dest, 0o644)?;
    }

    install(
        &packaging.join("lintian-overrides"),
        &stage.join("usr/share/lintian/overrides/secops"),
        0o644,
    )?;
    let doc = stage.join("usr/share/doc/secops");
    install(&packaging.join("copyright"), &doc.join("copyright"), 0o644)?;
    let changelog = fs::read_to_string(packaging.join("changelog"))?
        .replace("@VERSION@", version)
        .replace("@DATE@", &changelog_date(workspace)?);
    let plain = out.join("changelog");
    fs::write(&plain, changelog)?;
    gzip(&plain, &doc.join("changelog.gz"))?;

    // Control area.
    let control_dir = stage.join("DEBIAN");
    fs::create_dir_all(&control_dir)?;
    for script in ["postinst", "prerm", "postrm"] {
        install(&packaging.join(script), &control_dir.join(script), 0o755)?;
    }
    let mut list = String::new();
    for c in &conffiles {
        list.push_str(&format!("{}\n", c.display()));
    }
    write_file(&control_dir.join("conffiles"), &list, 0o644)?;
    let depends = format!("{}, adduser", shlib_depends(&bin, out)?);
    let control = fs::read_to_string(packaging.join("control"))?
        .replace("@VERSION@", version)
        .replace("@ARCH@", &arch)
        .replace("@SIZE@", &installed_size_kib(&stage)?.to_string())
        .replace("@DEPENDS@", &depends);
    write_file(&control_dir.join("control"), &control, 0o644)?;
    write_file(
        &control_dir.join("md5sums"),
        &md5sums(&stage, &conffiles)?,
        0o644,
    )?;

    let deb = deb_path(out, &arch);
    if deb.exists() {
        fs::remove_file(&deb)?;
    }
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&stage)
        .arg(&deb))?;
    Ok(deb)
}

/// The default policy as /etc/secops/policy.yaml and every file it includes below
/// /etc/secops (the includes are relative to it).
fn policy_files(policies: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    let mut files = vec![(
        policies.join("default.yaml"),
        PathBuf::from("/etc/secops/policy.yaml"),
    )];
    let common = policies.join("common");
    let mut shared: Vec<PathBuf> = fs::read_dir(&common)
        .with_context(|| format!("reading {}", common.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    shared.sort();
    for file in shared {
        let name = file.file_name().context("policy file name")?.to_owned();
        files.push((file, Path::new("/etc/secops/common").join(name)));
    }
    Ok(files)
}

/// `shlibs:Depends` of the binary, from dpkg-shlibdeps (which wants a debian/control).
fn shlib_depends(binary: &Path, out: &Path) -> Result<String> {
    let work = out.join("shlibdeps");
    fs::create_dir_all(work.join("debian"))?;
    fs::write(
        work.join("debian/control"),
        "Source: secops\n\nPackage: secops\nArchitecture: any\n",
    )?;
    let binary = fs::canonicalize(binary)?;
    let line = output_bytes(
        Command::new("dpkg-shlibdeps")
            .args(["-O", "-e"])
            .arg(&binary)
            .current_dir(&work),
    )?;
    let line = String::from_utf8(line).context("dpkg-shlibdeps output")?;
    let depends = line
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .with_context(|| format!("dpkg-shlibdeps said no Depends: {line}"))?;
    Ok(depends.trim().to_owned())
}

/// The changelog's date: the last commit's, so two builds of one commit are the same.
fn changelog_date(workspace: &Path) -> Result<String> {
    let date = Command::new("git")
        .args(["log", "-1", "--format=%aD"])
        .current_dir(workspace)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|d| !d.is_empty());
    match date {
        Some(date) => Ok(date),
        None => output("date", &["-R"]),
    }
}

fn installed_size_kib(stage: &Path) -> Result<u64> {
    let mut total = 0;
    for file in files_below(stage)? {
        if !file.starts_with(stage.join("DEBIAN")) {
            total += fs::symlink_metadata(&file)?.len().div_ceil(1024);
        }
    }
    Ok(total.max(1))
}

fn md5sums(stage: &Path, conffiles: &[PathBuf]) -> Result<String> {
    let mut lines = String::new();
    for file in files_below(stage)? {
        let relative = file.strip_prefix(stage)?;
        let absolute = Path::new("/").join(relative);
        if relative.starts_with("DEBIAN") || conffiles.contains(&absolute) {
            continue;
        }
        let sum = output_bytes(Command::new("md5sum").arg(&file))?;
        let sum = String::from_utf8_lossy(&sum);
        let hash = sum.split_whitespace().next().context("md5sum output")?;
        lines.push_str(&format!("{hash}  {}\n", relative.display()));
    }
    Ok(lines)
}

/// Every regular file below `dir`, sorted.
fn files_below(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// `gzip -9n`: no name or time stamp inside, as Debian wants.
fn gzip(from: &Path, to: &Path) -> Result<()> {
    make_parent(to)?;
    let data = output_bytes(Command::new("gzip").args(["-9n", "-c"]).arg(from))?;
    fs::write(to, data)?;
    set_mode(to, 0o644)
}

fn install(from: &Path, to: &Path, mode: u32) -> Result<()> {
    make_parent(to)?;
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    set_mode(to, mode)
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<()> {
    make_parent(path)?;
    fs::File::create(path)?.write_all(text.as_bytes())?;
    set_mode(path, mode)
}

fn make_parent(path: &Path) -> Result<()> {
    let parent = path.parent().context("a path with a parent")?;
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("running {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(())
}

fn output_bytes(command: &mut Command) -> Result<Vec<u8>> {
    let out = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

fn output(program: &str, args: &[&str]) -> Result<String> {
    let out = output_bytes(Command::new(program).args(args))?;
    Ok(String::from_utf8_lossy(&out).trim().to_owned())
}
