use super::*;
use crate::engine::synthetic::Lcg;
use crate::policy::glob::tests::reference_match;

fn pattern(raw: &str) -> PathPattern {
    PathPattern::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"))
}

fn components(path: &str) -> Vec<&[u8]> {
    path.split('/')
        .filter(|c| !c.is_empty())
        .map(str::as_bytes)
        .collect()
}

/// What the index should say, from the plain definition.
fn expected(
    patterns: &[(PathPattern, Scope)],
    homes: &[PathPattern],
    path: &str,
    binding: &Binding<'_>,
) -> Vec<u32> {
    let names = components(path);
    let mut out = Vec::new();
    for (i, (p, scope)) in patterns.iter().enumerate() {
        if let Scope::Agent(a) = scope {
            if binding.agent != Some(*a) {
                continue;
            }
        }
        let relative_to = |dir: &str| -> Option<Vec<&[u8]>> {
            let rest = path.strip_prefix(dir)?;
            (rest.is_empty() || rest.starts_with('/')).then(|| components(rest))
        };
        let hit = p.globs().iter().any(|g| match p.base() {
            PatternBase::Root => reference_match(g, &names, true),
            PatternBase::Workspace => binding
                .workspace
                .and_then(relative_to)
                .is_some_and(|below| reference_match(g, &below, false)),
            PatternBase::Home => match binding.home {
                Some(home) => {
                    relative_to(home).is_some_and(|below| reference_match(g, &below, false))
                }
                None => homes
                    .iter()
                    .flat_map(|h| h.globs())
                    .any(|h| reference_match(&join(h, g), &names, true)),
            },
        });
        if hit {
            out.push(i as u32);
        }
    }
    out
}

/// Random patterns of every base, in one index, against random paths for agents with and
/// without their own home: the tries find exactly what the plain definition says.
#[test]
fn tries_agree_with_the_definition() {
    const NAMES: &[&str] = &[
        "a", "b", "ab", "*", "a*", "*b", "?", "[ab]", "*a*", "**", "{a,b}", "{a/b,c}", "b**", "ws",
        "h",
    ];
    const PATH_NAMES: &[&str] = &["a", "b", "ab", "ba", "x", "ws", "h", "bb"];
    let homes = vec![pattern("/h"), pattern("/ws/*")];
    let mut rng = Lcg(7);
    let mut patterns = Vec::new();
    while patterns.len() < 400 {
        let mut raw = String::from(rng.pick(&["/", "**/", "~/", "${workspace}/", "/ws/"]));
        for i in 0..rng.next() % 4 {
            if i > 0 {
                raw.push('/');
            }
            raw.push_str(rng.pick(NAMES));
        }
        if rng.next().is_multiple_of(3) {
            raw.push_str(if raw.ends_with('/') { "**" } else { "/**" });
        }
        let raw = match raw.strip_suffix('/') {
            Some(r) if r == "~" || r == "${workspace}" => r.to_owned(),
            Some(_) => continue,
            None => raw,
        };
        let Ok(p) = PathPattern::parse(&raw) else {
            continue;
        };
        let scope = match rng.next() % 4 {
            0 => Scope::Agent(1),
            1 => Scope::Agent(2),
            _ => Scope::All,
        };
        patterns.push((p, scope));
    }
    let mut index = GlobIndex::new();
    for (i, (p, scope)) in patterns.iter().enumerate() {
        index.insert(p, i as u32, *scope, &homes);
    }
    index.finish();
    let bindings = [
        Binding {
            agent: Some(1),
            workspace: Some("/ws/a"),
            home: None,
        },
        Binding {
            agent: Some(2),
            workspace: Some("/ws"),
            home: Some("/h/b"),
        },
        Binding {
            agent: None,
            workspace: None,
            home: None,
        },
    ];
    let mut scratch = GlobScratch::default();
    let mut out = Vec::new();
    let mut hits = 0;
    for _ in 0..4000 {
        let mut path = String::new();
        for _ in 0..rng.next() % 5 {
            path.push('/');
            path.push_str(rng.pick(PATH_NAMES));
        }
        if path.is_empty() {
            path.push('/');
        }
        for binding in &bindings {
            index.hits(&path, binding, &mut scratch, &mut out);
            let want = expected(&patterns, &homes, &path, binding);
            assert_eq!(out, want, "{path} for {binding:?}");
            hits += out.len();
        }
    }
    assert!(hits > 10_000, "the test should exercise matches: {hits}");
}

#[test]
fn many_name_patterns_in_one_node() {
    let mut index = GlobIndex::new();
    for i in 0..2000u32 {
        let raw = match i % 4 {
            0 => format!("**/*.ext{i}"),
            1 => format!("/opt/tool{i}*"),
            2 => format!("/srv/*x{i}x*"),
            _ => format!("/data/project{i}/**"),
        };
        index.insert(&pattern(&raw), i, Scope::All, &[]);
    }
    index.finish();
    let binding = Binding {
        agent: Some(0),
        workspace: None,
        home: None,
    };
    let mut scratch = GlobScratch::default();
    let mut out = Vec::new();
    for (path, want) in [
        ("/a/b/c.ext400", vec![400]),
        ("/a/b/c.ext4000", vec![]),
        ("/opt/tool1777-x", vec![1, 17, 177, 1777]),
        ("/srv/ax1778xb", vec![1778]),
        ("/data/project1999/x", vec![1999]),
        ("/data/project1999", vec![1999]),
    ] {
        index.hits(path, &binding, &mut scratch, &mut out);
        assert_eq!(out, want, "{path}");
    }
}
