//! The Luhn check digit and the card-number shape rules that keep long numeric ids, phone
//! numbers and timestamps out of the `card_number` category.

/// Whether `digits` (ASCII digits only) carries a valid Luhn check digit.
pub fn luhn_valid(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &d) in digits.iter().rev().enumerate() {
        if !d.is_ascii_digit() {
            return false;
        }
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// Whether the leading digits belong to a card network that issues numbers of this length.
/// Luhn alone passes one random number in ten, so the issuer prefix is what keeps order ids
/// and nanosecond timestamps (which start with 1) from being reported.
pub fn issuer_known(digits: &[u8]) -> bool {
    let len = digits.len();
    let prefix = |n: usize| -> u32 {
        digits
            .iter()
            .take(n)
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d.wrapping_sub(b'0')))
    };
    match digits.first() {
        // Visa
        Some(b'4') => matches!(len, 13 | 16 | 19),
        Some(b'5') => (51..=55).contains(&prefix(2)) && len == 16,
        Some(b'2') => (2221..=2720).contains(&prefix(4)) && len == 16,
        Some(b'3') => match prefix(2) {
            34 | 37 => len == 15,
            35 => (16..=19).contains(&len),
            36 | 38 | 39 => (14..=19).contains(&len),
            30 => (300..=305).contains(&prefix(3)) && (14..=19).contains(&len),
            _ => false,
        },
        Some(b'6') => {
            (prefix(4) == 6011 || prefix(2) == 65 || (644..=649).contains(&prefix(3)))
                && (16..=19).contains(&len)
        }
        _ => false,
    }
}

/// Test numbers the card networks and payment processors publish for sandboxes. They pass
/// Luhn by design, appear in documentation and fixtures everywhere, and are not anyone's card.
const PUBLISHED_TEST_NUMBERS: &[&[u8]] = &[
    b"4111111111111111",
    b"4242424242424242",
    b"4012888888881881",
    b"4000056655665556",
    b"5555555555554444",
    b"5105105105105100",
    b"5200828282828210",
    b"378282246310005",
    b"371449635398431",
    b"6011111111111117",
    b"6011000990139424",
    b"3530111333300000",
];

/// Whether `digits` is a plausible real card number.
pub fn is_card_number(digits: &[u8]) -> bool {
    (13..=19).contains(&digits.len())
        && issuer_known(digits)
        && luhn_valid(digits)
        && !PUBLISHED_TEST_NUMBERS.contains(&digits)
        // A run of one repeated digit is a mask or filler, never a card.
        && digits.iter().any(|&d| Some(&d) != digits.first())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn() {
        assert!(luhn_valid(b"79927398713"));
        assert!(!luhn_valid(b"79927398710"));
        assert!(!luhn_valid(b""));
        assert!(!luhn_valid(b"12a4"));
    }

    #[test]
    fn issuers() {
        assert!(issuer_known(b"4556737586899855"));
        assert!(issuer_known(b"2221000000000009"));
        assert!(!issuer_known(b"1700000000000000"));
        assert!(!issuer_known(b"5655555555555555"));
    }

    #[test]
    fn published_test_numbers_are_not_cards() {
        assert!(!is_card_number(b"4111111111111111"));
        assert!(is_card_number(b"4556737586899855"));
    }
}
