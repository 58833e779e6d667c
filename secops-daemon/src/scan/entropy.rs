//! Shannon entropy and the "does this value look like a secret" judgement for values found
//! next to a key-like name.

/// Bits per byte of `s`, from its own byte frequencies.
pub fn shannon(s: &[u8]) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in s {
        counts[usize::from(b)] += 1;
    }
    let len = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / len;
            -p * p.log2()
        })
        .sum()
}

/// Whether a value assigned to a key-like name is random enough to be a secret.
///
/// The threshold grows with length because a short string cannot reach high per-byte
/// entropy (12 distinct bytes is at most log2(12) = 3.58 bits), and is capped at 3.5 so
/// that hex secrets (at most 4 bits per byte) still qualify. A digit and a letter are both
/// required: identifiers (`self.token_value`) and words (`correcthorsebattery`) have one
/// class only far more often than generated secrets do.
pub fn looks_random(value: &[u8]) -> bool {
    if value.len() < 12 {
        return false;
    }
    let has_digit = value.iter().any(u8::is_ascii_digit);
    let has_alpha = value.iter().any(u8::is_ascii_alphabetic);
    if !has_digit || !has_alpha {
        return false;
    }
    let threshold = (0.85 * (value.len().min(64) as f64).log2()).min(3.5);
    shannon(value) >= threshold
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_values() {
        assert_eq!(shannon(b"aaaa"), 0.0);
        assert!((shannon(b"abcd") - 2.0).abs() < 1e-9);
    }

    #[test]
    fn random_vs_not() {
        assert!(looks_random(b"q8Vz3kLm0PxR7tYw2NbC"));
        assert!(looks_random(b"9f86d081884c7d659a2feaa0c55ad015"));
        assert!(!looks_random(b"self.token_value"));
        assert!(!looks_random(b"aaaabbbb1111"));
        assert!(!looks_random(b"short1"));
    }
}
