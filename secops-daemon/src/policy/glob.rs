//! Path globs, parsed once when the policy loads into lists of path components, which the
//! engine merges into component tries (`engine/globs.rs`). Nothing is compiled into a regex,
//! so no policy is too large to match: the glob set used before (one regex set per agent)
//! failed to build at 50,000 rules, and matched nothing from then on.
//!
//! The syntax is globset's, as the policy used it (`literal_separator`, `backslash_escape`):
//! `*` and `?` within one component, `[...]` classes (`[!...]` or `[^...]` negated), `{a,b}`
//! alternatives, `\` escapes, and `**` as a whole component for any depth. Where globset
//! would have matched something no normalized path can be, the pattern is refused instead:
//! empty components (`//`, a trailing `/`), a class that lists `/`, `**` inside `{...}`.
//! A negated class never matches `/` here (globset's `[!a]` did, crossing components).

use std::fmt;

/// Alternatives a single pattern may expand to (`{a,b}{c,d}` is four).
pub const MAX_ALTERNATIVES: usize = 256;

/// One path component of a glob.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Component {
    /// A name without wildcards.
    Literal(Box<[u8]>),
    /// A name with `*`, `?` or classes.
    Pattern(NamePattern),
    /// `**`: any number of components. Zero or more where something follows it; one or more
    /// at the end of a glob (`/data/**` is what is below /data), except that a glob that is
    /// only `/**` matches every path, `/` included.
    Recursive,
}

/// A glob with its components; an empty list is `/` itself (or, relative to a directory,
/// the directory). The path `/` is also matched as one empty name, so `/*` matches it (as
/// globset's `/[^/]*` did).
pub type Components = Vec<Component>;

/// A component pattern: segments of single-byte atoms separated by `*`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NamePattern {
    segments: Box<[Segment]>,
    leading_star: bool,
    trailing_star: bool,
}

type Segment = Box<[Atom]>;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Atom {
    Byte(u8),
    /// `?`: one byte.
    Any,
    Class(Class),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Class {
    negated: bool,
    /// Inclusive ASCII ranges.
    ranges: Box<[(u8, u8)]>,
}

impl Atom {
    fn matches(&self, b: u8) -> bool {
        match self {
            Atom::Byte(x) => *x == b,
            Atom::Any => true,
            Atom::Class(c) => c.ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&b)) != c.negated,
        }
    }
}

fn segment_matches(segment: &[Atom], s: &[u8]) -> bool {
    segment.len() == s.len() && segment.iter().zip(s).all(|(a, &b)| a.matches(b))
}

/// The leftmost place `segment` matches in `s`.
fn segment_find(segment: &[Atom], s: &[u8]) -> Option<usize> {
    let n = segment.len();
    if n > s.len() {
        return None;
    }
    match segment.first() {
        Some(Atom::Byte(first)) => {
            let mut from = 0;
            while let Some(i) = memchr::memchr(*first, &s[from..=s.len() - n]) {
                let at = from + i;
                if segment_matches(segment, &s[at..at + n]) {
                    return Some(at);
                }
                from = at + 1;
            }
            None
        }
        _ => (0..=s.len() - n).find(|&at| segment_matches(segment, &s[at..at + n])),
    }
}

impl NamePattern {
    /// Whether the component `name` (no `/` in it) matches. Segments are fixed-width, so
    /// taking each at its leftmost place is exact; the cost is linear in the name per segment.
    pub fn matches(&self, name: &[u8]) -> bool {
        let mut segments = &self.segments[..];
        let mut s = name;
        let has_star = self.leading_star || self.trailing_star || segments.len() > 1;
        if !self.leading_star {
            let Some((first, rest)) = segments.split_first() else {
                return s.is_empty();
            };
            if s.len() < first.len() || !segment_matches(first, &s[..first.len()]) {
                return false;
            }
            s = &s[first.len()..];
            segments = rest;
            if !has_star {
                return s.is_empty();
            }
        }
        if !self.trailing_star {
            let Some((last, rest)) = segments.split_last() else {
                return true;
            };
            if s.len() < last.len() || !segment_matches(last, &s[s.len() - last.len()..]) {
                return false;
            }
            s = &s[..s.len() - last.len()];
            segments = rest;
        }
        for segment in segments {
            match segment_find(segment, s) {
                Some(at) => s = &s[at + segment.len()..],
                None => return false,
            }
        }
        true
    }

    /// The literal bytes every match starts with (up to the first wildcard).
    pub fn literal_prefix(&self) -> Vec<u8> {
        if self.leading_star {
            return Vec::new();
        }
        literal_run(self.segments.first().map_or(&[][..], |s| &s[..]))
    }

    /// The literal bytes every match ends with (after the last wildcard).
    pub fn literal_suffix(&self) -> Vec<u8> {
        if self.trailing_star {
            return Vec::new();
        }
        let last = self.segments.last().map_or(&[][..], |s| &s[..]);
        let mut run = literal_run(&last.iter().rev().cloned().collect::<Vec<_>>());
        run.reverse();
        run
    }

    /// Whether this is `*`: every name.
    pub fn is_any_name(&self) -> bool {
        self.segments.is_empty()
    }
}

fn literal_run(atoms: &[Atom]) -> Vec<u8> {
    atoms
        .iter()
        .map_while(|a| match a {
            Atom::Byte(b) => Some(*b),
            _ => None,
        })
        .collect()
}

/// A problem with a glob, for the policy's error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobError(String);

impl fmt::Display for GlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn error<T>(message: impl Into<String>) -> Result<T, GlobError> {
    Err(GlobError(message.into()))
}

/// Tokens before alternatives are expanded.
#[derive(Clone, Debug)]
enum Token {
    Byte(u8),
    Any,
    Star,
    /// `**` standing alone between separators (or the glob's ends).
    Recursive,
    Class(Class),
    Alternatives(Vec<Vec<Token>>),
}

/// Parses `glob` into the component lists it stands for (one per alternative).
///
/// `relative`: the glob is what follows a directory (`${workspace}`, `~`): empty, or
/// starting with `/`. Otherwise it starts with `/` or `**`.
pub fn parse(glob: &str, relative: bool) -> Result<Vec<Components>, GlobError> {
    let tokens = tokenize(glob)?;
    let mut out = Vec::new();
    for flat in expand(&tokens)? {
        let components = split(&flat, relative)?;
        // globset's `**/` at the start may match nothing and leave the path's leading `/`,
        // so a `*` right after it may match the empty name before that `/`: `**/*/x` also
        // matches `/x` (and `**/*` matches `/`). Kept, so that no rule matches less than it
        // did.
        if let [Component::Recursive, Component::Pattern(p), rest @ ..] = &components[..] {
            if !relative && p.is_any_name() && !out.contains(&rest.to_vec()) {
                out.push(rest.to_vec());
            }
        }
        if !out.contains(&components) {
            out.push(components);
        }
    }
    Ok(out)
}

fn tokenize(glob: &str) -> Result<Vec<Token>, GlobError> {
    let chars: Vec<char> = glob.chars().collect();
    // Open alternatives: the branches of each, innermost last.
    let mut branches: Vec<Vec<Token>> = vec![Vec::new()];
    let mut open: Vec<usize> = Vec::new();
    let mut i = 0;
    let push = |branches: &mut Vec<Vec<Token>>, t: Token| {
        if let Some(b) = branches.last_mut() {
            b.push(t);
        }
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '?' => push(&mut branches, Token::Any),
            '*' if chars.get(i + 1) == Some(&'*') => {
                if !open.is_empty() {
                    return error("'**' inside {...} is not supported; write the alternatives as separate patterns");
                }
                let before = if i == 0 { None } else { Some(chars[i - 1]) };
                let after = chars.get(i + 2).copied();
                let alone = before.is_none_or(|b| b == '/') && after.is_none_or(|a| a == '/');
                if alone {
                    push(&mut branches, Token::Recursive);
                } else {
                    // Not a whole component: `a**` is `a*`, as in globset.
                    push(&mut branches, Token::Star);
                    push(&mut branches, Token::Star);
                }
                i += 1;
            }
            '*' => push(&mut branches, Token::Star),
            '[' => {
                let (class, next) = parse_class(&chars, i + 1)?;
                push(&mut branches, Token::Class(class));
                i = next;
                continue;
            }
            '{' => {
                open.push(branches.len());
                branches.push(Vec::new());
            }
            ',' if !open.is_empty() => branches.push(Vec::new()),
            '}' => {
                let Some(start) = open.pop() else {
                    return error("'}' without an opening '{'");
                };
                let alternatives: Vec<Vec<Token>> = branches.drain(start..).collect();
                push(&mut branches, Token::Alternatives(alternatives));
            }
            '\\' => {
                let Some(&escaped) = chars.get(i + 1) else {
                    return error("a '\\' at the end escapes nothing");
                };
                push_char(&mut branches, escaped);
                i += 1;
            }
            c => push_char(&mut branches, c),
        }
        i += 1;
    }
    if !open.is_empty() {
        return error("a '{' is not closed");
    }
    Ok(branches.pop().unwrap_or_default())
}

fn push_char(branches: &mut [Vec<Token>], c: char) {
    let mut buf = [0u8; 4];
    if let Some(b) = branches.last_mut() {
        b.extend(c.encode_utf8(&mut buf).bytes().map(Token::Byte));
    }
}

/// A class after its `[`, as globset reads it: `!` or `^` first negates, a `]` or `-` first
/// is literal, `a-z` is a range, a `-` last is literal. Returns the index after the `]`.
fn parse_class(chars: &[char], mut i: usize) -> Result<(Class, usize), GlobError> {
    let negated = matches!(chars.get(i), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut ranges: Vec<(char, char)> = Vec::new();
    let mut first = true;
    let mut in_range = false;
    loop {
        let Some(&c) = chars.get(i) else {
            return error("a '[' class is not closed");
        };
        i += 1;
        match c {
            ']' if !first => break,
            '-' if !first && !in_range => in_range = true,
            c => {
                if in_range {
                    let last = ranges.last_mut().expect("a range follows a character");
                    if c < last.0 {
                        return error(format!("the class range {}-{c} runs backwards", last.0));
                    }
                    last.1 = c;
                    in_range = false;
                } else {
                    ranges.push((c, c));
                }
            }
        }
        first = false;
    }
    if in_range {
        ranges.push(('-', '-'));
    }
    let mut ascii = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        if !lo.is_ascii() || !hi.is_ascii() {
            return error("a [...] class may only hold ASCII characters");
        }
        if !negated && (lo..=hi).contains(&'/') {
            return error("a [...] class cannot match '/' (components are matched one by one)");
        }
        ascii.push((lo as u8, hi as u8));
    }
    Ok((
        Class {
            negated,
            ranges: ascii.into(),
        },
        i,
    ))
}

/// Every token sequence the alternatives stand for. Empty alternatives are dropped (as
/// globset does), unless all are empty.
fn expand(tokens: &[Token]) -> Result<Vec<Vec<Token>>, GlobError> {
    let mut out: Vec<Vec<Token>> = vec![Vec::new()];
    for token in tokens {
        match token {
            Token::Alternatives(branches) => {
                let mut choices: Vec<Vec<Token>> = Vec::new();
                for branch in branches {
                    for choice in expand(branch)? {
                        if !choice.is_empty() {
                            choices.push(choice);
                        }
                    }
                }
                if choices.is_empty() {
                    continue;
                }
                if out.len() * choices.len() > MAX_ALTERNATIVES {
                    return error(format!(
                        "the pattern expands to more than {MAX_ALTERNATIVES} alternatives; split it into several patterns"
                    ));
                }
                out = out
                    .iter()
                    .flat_map(|prefix| {
                        choices.iter().map(move |choice| {
                            let mut joined = prefix.clone();
                            joined.extend(choice.iter().cloned());
                            joined
                        })
                    })
                    .collect();
            }
            other => {
                for seq in &mut out {
                    seq.push(other.clone());
                }
            }
        }
    }
    Ok(out)
}

fn split(tokens: &[Token], relative: bool) -> Result<Components, GlobError> {
    let mut parts: Vec<&[Token]> = tokens.split(|t| matches!(t, Token::Byte(b'/'))).collect();
    if relative && tokens.is_empty() {
        return Ok(Vec::new());
    }
    match parts.first() {
        Some([]) => {
            parts.remove(0);
        }
        Some([Token::Recursive]) if !relative => {}
        _ if relative => return error("after a directory variable, a pattern continues with '/'"),
        _ => return error("a path pattern must start with '/' or '**'"),
    }
    if !relative && parts.len() == 1 && parts[0].is_empty() {
        return Ok(Vec::new()); // "/"
    }
    let mut components: Components = Vec::with_capacity(parts.len());
    for part in parts {
        let component = match part {
            [] => return error(
                "an empty path component ('//' or a trailing '/') never matches a normalized path",
            ),
            [Token::Recursive] => {
                if components.last() == Some(&Component::Recursive) {
                    continue;
                }
                Component::Recursive
            }
            part => name_component(part),
        };
        components.push(component);
    }
    Ok(components)
}

fn name_component(tokens: &[Token]) -> Component {
    if let Some(literal) = tokens
        .iter()
        .map(|t| match t {
            Token::Byte(b) => Some(*b),
            _ => None,
        })
        .collect::<Option<Vec<u8>>>()
    {
        return Component::Literal(literal.into());
    }
    let mut segments: Vec<Segment> = Vec::new();
    let mut current: Vec<Atom> = Vec::new();
    let leading_star = matches!(tokens.first(), Some(Token::Star));
    let trailing_star = matches!(tokens.last(), Some(Token::Star));
    for token in tokens {
        match token {
            Token::Star => {
                if !current.is_empty() {
                    segments.push(std::mem::take(&mut current).into());
                }
            }
            Token::Byte(b) => current.push(Atom::Byte(*b)),
            Token::Any => current.push(Atom::Any),
            Token::Class(c) => current.push(Atom::Class(c.clone())),
            // Neither occurs inside a component: `**` alone is a component of its own and
            // alternatives were expanded.
            Token::Recursive | Token::Alternatives(_) => {}
        }
    }
    if !current.is_empty() {
        segments.push(current.into());
    }
    Component::Pattern(NamePattern {
        segments: segments.into(),
        leading_star,
        trailing_star,
    })
}

#[cfg(test)]
pub(crate) mod tests;
