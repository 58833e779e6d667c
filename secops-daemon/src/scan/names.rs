//! Values assigned to key-like names (`password = ...`, `"api_key": "..."`,
//! `Authorization: Bearer ...`).
//!
//! The names are made of common letters, so a literal search for them matches all over
//! ordinary text. They are found from the other side instead: every `=` and `:` (memchr2,
//! SIMD) is a candidate assignment, the identifier before it is read backwards, and only
//! an identifier holding one of the names (compared ASCII case-insensitively in place) has
//! its value judged.

use super::detectors::{is_marked_example, is_word, push};
use super::entropy::looks_random;
use super::{Category, Finding};

/// The names whose values are judged, grouped by first letter for [`name_at`]. None of
/// them holds another, and each is made of identifier bytes only, so an occurrence lies
/// inside one identifier.
const NAMES: &[&[u8]] = &[
    b"pass",
    b"pwd",
    b"private_key",
    b"privatekey",
    b"secret",
    b"token",
    b"apikey",
    b"api_key",
    b"api-key",
    b"access_key",
    b"accesskey",
    b"auth",
    b"credential",
];

/// How far a name may sit from the end of its identifier (a name further before the
/// separator does not count), and how much of the identifier before the name is read for
/// the AWS-secret rule.
const REACH: usize = 64;

fn ident_byte(b: u8) -> bool {
    is_word(b) || b == b'-' || b == b'.'
}

const IDENT: u8 = 1;
const NAME_START: u8 = 2;

/// Per byte: whether it belongs to an identifier, and whether a name can start with it, so
/// that the backward walk learns both with one load per byte.
static CLASS: [u8; 256] = {
    let mut class = [0u8; 256];
    let mut b = 0usize;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'.' {
            class[b] = IDENT;
        }
        if matches!(c | 0x20, b'p' | b's' | b't' | b'a' | b'c') && c.is_ascii_alphabetic() {
            class[b] |= NAME_START;
        }
        b += 1;
    }
    class
};

pub(super) fn assignments(text: &[u8], out: &mut Vec<Finding>) {
    for sep in memchr::memchr2_iter(b'=', b':', text) {
        // Backwards over what may sit between a name and its separator: spaces, then one
        // closing quote.
        let mut end = sep;
        while end > 0 && matches!(text[end - 1], b' ' | b'\t') {
            end -= 1;
        }
        if end > 0 && matches!(text[end - 1], b'"' | b'\'') {
            end -= 1;
        }
        if end < 3 || !ident_byte(text[end - 1]) {
            continue;
        }
        let mut start = end;
        let mut seen = 0u8;
        while start > 0 && CLASS[usize::from(text[start - 1])] & IDENT != 0 {
            start -= 1;
            seen |= CLASS[usize::from(text[start])];
        }
        // Most separators in logs follow digits (`03:54:15`, `main.rs:42`): no name there.
        if seen & NAME_START == 0 {
            continue;
        }
        if let Some(name_start) = judged_name_start(text, start, end) {
            assigned_value(text, &text[name_start..end], end, out);
        }
    }
}

/// Length of the name at the start of `ident`, if one starts there.
fn name_at(ident: &[u8]) -> Option<usize> {
    let candidates: &[&[u8]] = match ident[0] | 0x20 {
        b'p' => &NAMES[..4],
        b's' => &NAMES[4..5],
        b't' => &NAMES[5..6],
        b'a' => &NAMES[6..12],
        b'c' => &NAMES[12..],
        _ => return None,
    };
    candidates
        .iter()
        .find(|n| {
            ident
                .get(..n.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(n))
        })
        .map(|n| n.len())
}

/// The identifier `text[start..end]` names a secret if a name occurs in it at most
/// [`REACH`] bytes before its end. Names are taken left to right without overlap, and a
/// name within [`REACH`] after the previous counted one belongs to the same key and is not
/// counted again: a long identifier holding several names (`aws_secret_access_key`) is
/// judged once, from its first. Returns where the judged name (the counted name and at
/// most [`REACH`] bytes before it) starts.
fn judged_name_start(text: &[u8], start: usize, end: usize) -> Option<usize> {
    let mut counted_until = start;
    let mut i = start;
    while i < end {
        let Some(len) = name_at(&text[i..end]) else {
            i += 1;
            continue;
        };
        if i >= counted_until {
            if end - i <= REACH {
                return Some(i - (i - start).min(REACH));
            }
            counted_until = i + REACH;
        }
        i += len;
    }
    None
}

/// Bytes of a value assigned to a key-like name.
fn is_value_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"+/=_-.~!@#%^*".contains(&b)
}

/// Judges the value after the identifier `name`, which ends at `name_end`.
fn assigned_value(text: &[u8], name: &[u8], name_end: usize, out: &mut Vec<Finding>) {
    // Separator: optional closing quote, spaces, one of `=`, `:`, `:=`, `=>`, spaces,
    // optional opening quote, and an optional auth scheme (`Authorization: Bearer ...`).
    let mut i = name_end;
    let at = |i: usize| text.get(i).copied();
    if matches!(at(i), Some(b'"' | b'\'')) {
        i += 1;
    }
    while matches!(at(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    match (at(i), at(i + 1)) {
        (Some(b':'), Some(b'=')) | (Some(b'='), Some(b'>')) => i += 2,
        (Some(b':' | b'='), _) => i += 1,
        _ => return,
    }
    while matches!(at(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    if matches!(at(i), Some(b'"' | b'\'')) {
        i += 1;
    }
    for scheme in [&b"Bearer "[..], b"Basic ", b"token "] {
        if text
            .get(i..i + scheme.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
        {
            i += scheme.len();
        }
    }
    let value_start = i;
    let n = text[i..]
        .iter()
        .take(513)
        .take_while(|&&b| is_value_byte(b))
        .count();
    if n > 512 {
        return;
    }
    let mut value = &text[value_start..value_start + n];
    // A sentence-ending period or a trailing comma is punctuation, not part of the value.
    while let Some((&last, rest)) = value.split_last() {
        if matches!(last, b'.' | b'!') {
            value = rest;
        } else {
            break;
        }
    }
    if value.is_empty() || is_marked_example(value) || is_uuid(value) {
        return;
    }
    let category = if is_aws_secret_name(name)
        && value.len() == 40
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
    {
        Category::AwsSecretKey
    } else {
        Category::GenericSecret
    };
    if looks_random(value) {
        push(out, category, value_start, value_start + value.len());
    }
}

fn is_aws_secret_name(name: &[u8]) -> bool {
    let squashed: Vec<u8> = name
        .iter()
        .filter(|b| b.is_ascii_alphanumeric())
        .map(u8::to_ascii_lowercase)
        .collect();
    let has = |needle: &[u8]| squashed.windows(needle.len()).any(|w| w == needle);
    has(b"secretaccesskey") || (has(b"aws") && has(b"secret"))
}

/// 8-4-4-4-12 hex: request and object ids, which look random and are not secrets.
fn is_uuid(v: &[u8]) -> bool {
    v.len() == 36
        && v.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}
