use super::*;
use crate::engine::synthetic::Lcg;

/// What a parsed glob means, written as plainly as possible: the engine's tries are tested
/// against this, and this against globset.
pub(crate) fn reference_match(components: &[Component], path: &[&[u8]], absolute: bool) -> bool {
    fn go(c: &[Component], p: &[&[u8]]) -> bool {
        match c.split_first() {
            None => p.is_empty(),
            Some((Component::Recursive, [])) => !p.is_empty(),
            Some((Component::Recursive, rest)) => (0..=p.len()).any(|k| go(rest, &p[k..])),
            Some((Component::Literal(l), rest)) => {
                p.first().is_some_and(|x| *x == &l[..]) && go(rest, &p[1..])
            }
            Some((Component::Pattern(n), rest)) => {
                p.first().is_some_and(|x| n.matches(x)) && go(rest, &p[1..])
            }
        }
    }
    if absolute && components == [Component::Recursive] {
        return true;
    }
    // The root is `/` followed by an empty name: `/*` matches it.
    go(components, path) || (absolute && path.is_empty() && go(components, &[b""]))
}

fn components_of(path: &str) -> Vec<&[u8]> {
    path.split('/')
        .filter(|c| !c.is_empty())
        .map(str::as_bytes)
        .collect()
}

fn matches(glob: &str, path: &str) -> bool {
    let alternatives = parse(glob, false).unwrap_or_else(|e| panic!("{glob}: {e}"));
    alternatives
        .iter()
        .any(|c| reference_match(c, &components_of(path), true))
}

#[test]
fn names() {
    let name = |p: &str| match &parse(&format!("/{p}"), false).unwrap()[0][0] {
        Component::Pattern(n) => n.clone(),
        other => panic!("{p}: {other:?}"),
    };
    let cases: &[(&str, &[&str], &[&str])] = &[
        ("*", &["", "a", "abc"], &[]),
        ("*.key", &[".key", "a.key", "a.b.key"], &["a.keys", "key"]),
        ("tool*", &["tool", "tool7"], &["atool"]),
        (
            "a*b*c",
            &["abc", "aXbYc", "abbc", "acbc"],
            &["ab", "acb", "abcx"],
        ),
        ("*ab*", &["ab", "xaby", "aab"], &["a", "ba"]),
        ("a?c", &["abc", "a.c"], &["ac", "abbc"]),
        ("[ab]x", &["ax", "bx"], &["cx", "x"]),
        ("[!ab]x", &["cx"], &["ax", "bx"]),
        ("[a-c]*[0-9]", &["a0", "cz9"], &["d0", "a"]),
        ("[]-]", &["]", "-"], &["a"]),
        (
            "*a*a*a*b",
            &["aaab", "xaxaxab"],
            &["aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"],
        ),
    ];
    for (pattern, yes, no) in cases {
        let n = name(pattern);
        for y in *yes {
            assert!(n.matches(y.as_bytes()), "{pattern} should match {y}");
        }
        for x in *no {
            assert!(!n.matches(x.as_bytes()), "{pattern} should not match {x}");
        }
    }
    assert_eq!(name("*.key").literal_suffix(), b".key");
    assert_eq!(name("tool*").literal_prefix(), b"tool");
    assert!(name("*").is_any_name());
}

#[test]
fn depth() {
    assert!(matches("/**", "/") && matches("/**", "/a/b") && matches("**", "/"));
    assert!(matches("/data/**", "/data/x/y") && !matches("/data/**", "/data"));
    assert!(matches("/a/**/b", "/a/b") && matches("/a/**/b", "/a/x/y/b"));
    assert!(!matches("/a/**/b", "/a/xb"));
    assert!(matches("**/.env", "/.env") && matches("**/.env", "/x/y/.env"));
    assert!(matches("/", "/") && !matches("/", "/a"));
    assert!(matches("/a/b**", "/a/bc") && !matches("/a/b**", "/a/b/c"));
    assert!(matches("/a/{b,c/d}", "/a/c/d") && matches("/a/{b,c/d}", "/a/b"));
    assert!(
        matches("/x{,y}", "/xy") && !matches("/x{,y}", "/x"),
        "empty alternatives are dropped"
    );
    assert!(matches("/x{}", "/x"));
    assert!(matches("/a/\\*", "/a/*") && !matches("/a/\\*", "/a/b"));
    assert!(
        !matches("/a[!x]b", "/a/b"),
        "a negated class never matches '/'"
    );
}

#[test]
fn refusals_say_why() {
    for (bad, why) in [
        ("/a//b", "empty path component"),
        ("/a/", "trailing '/'"),
        ("**/", "trailing '/'"),
        ("/a/{**/b,c}", "inside {...}"),
        ("/a[/]b", "cannot match '/'"),
        ("/a[é]", "ASCII"),
        ("/a/[z-a]", "backwards"),
        ("/a/{b,c", "not closed"),
        ("/a/b}", "without an opening"),
        ("/a/[bc", "not closed"),
        ("/a\\", "escapes nothing"),
        ("a/b", "must start"),
    ] {
        let err = parse(bad, false).unwrap_err().to_string();
        assert!(err.contains(why), "{bad}: {err}");
    }
    let many = "/{a,b}{c,d}{e,f}{g,h}{i,j}{k,l}{m,n}{o,p}{q,r}";
    assert!(parse(many, false)
        .unwrap_err()
        .to_string()
        .contains("more than 256"));
    assert!(parse("", true).unwrap().first().is_some_and(Vec::is_empty));
    assert!(parse("x", true).is_err());
}

/// The parser and [`reference_match`] agree with globset (as the policy configured it) on
/// random globs and paths, wherever both accept the glob.
#[test]
fn agrees_with_globset() {
    const NAMES: &[&str] = &[
        "a", "b", "ab", "*", "a*", "*b", "?", "[ab]", "a?", "*a*", "**", "{a,b}", "{a,*b}",
        "{a/b,c}", "\\*", "[a-b]*", "b**", "{,a}",
    ];
    const PATH_NAMES: &[&str] = &["a", "b", "ab", "ba", "aab", "x", "*", "bb"];
    let mut rng = Lcg(21);
    let mut compared = 0;
    for _ in 0..3000 {
        let mut glob = String::from(rng.pick(&["/", "**/", "/", "/"]));
        let n = rng.next() % 4;
        for i in 0..n {
            if i > 0 {
                glob.push('/');
            }
            glob.push_str(rng.pick(NAMES));
        }
        if rng.next().is_multiple_of(3) {
            glob.push_str(if glob.ends_with('/') { "**" } else { "/**" });
        }
        let Ok(ours) = parse(&glob, false) else {
            continue;
        };
        let theirs = globset::GlobBuilder::new(&glob)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .unwrap_or_else(|e| panic!("{glob}: we accept what globset refuses: {e}"))
            .compile_matcher();
        for _ in 0..40 {
            let mut path = String::new();
            for _ in 0..rng.next() % 5 {
                path.push('/');
                path.push_str(rng.pick(PATH_NAMES));
            }
            if path.is_empty() {
                path.push('/');
            }
            let components = components_of(&path);
            let we = ours.iter().any(|c| reference_match(c, &components, true));
            assert_eq!(
                we,
                theirs.is_match(&path),
                "glob {glob} on {path}: {ours:?}"
            );
            compared += 1;
        }
    }
    assert!(compared > 50_000, "{compared}");
}
