//! Phone numbers: a small E.164 normaliser (not a full libphonenumber) and the
//! calling codes of the countries `m.id.phone` and `requestToken` accept.
//!
//! The normal form is `+` and 8 to 15 digits, the first not 0. As a Matrix
//! 3PID address (`medium: msisdn`) the same number is written without the `+`.

use crate::error::{Error, Result};

/// ISO 3166-1 alpha-2 country → calling code (the countries bigd supports in
/// `m.id.phone`; any other number can be given in international form).
const CALLING_CODES: &[(&str, &str)] = &[
    ("AE", "971"),
    ("AR", "54"),
    ("AT", "43"),
    ("AU", "61"),
    ("BE", "32"),
    ("BR", "55"),
    ("CA", "1"),
    ("CH", "41"),
    ("CN", "86"),
    ("CZ", "420"),
    ("DE", "49"),
    ("DK", "45"),
    ("EG", "20"),
    ("ES", "34"),
    ("FI", "358"),
    ("FR", "33"),
    ("GB", "44"),
    ("GR", "30"),
    ("HK", "852"),
    ("ID", "62"),
    ("IE", "353"),
    ("IL", "972"),
    ("IN", "91"),
    ("IT", "39"),
    ("JP", "81"),
    ("KR", "82"),
    ("MX", "52"),
    ("NG", "234"),
    ("NL", "31"),
    ("NO", "47"),
    ("NZ", "64"),
    ("PH", "63"),
    ("PL", "48"),
    ("PT", "351"),
    ("RU", "7"),
    ("SA", "966"),
    ("SE", "46"),
    ("SG", "65"),
    ("TH", "66"),
    ("TR", "90"),
    ("UA", "380"),
    ("US", "1"),
    ("VN", "84"),
    ("ZA", "27"),
];

/// Countries whose national numbers keep their leading 0 after the calling code.
const KEEPS_LEADING_ZERO: &[&str] = &["IT"];

fn invalid(message: impl Into<String>) -> Error {
    Error::invalid_param(message)
}

/// Characters people put in numbers for readability.
fn strip_separators(input: &str) -> String {
    input
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')' | '/' | '\u{a0}'))
        .collect()
}

/// Normalises an international number (`+44 20 7946 0958`, `0044-20-...`) to
/// `+442079460958`. A national number without a country code is refused.
pub fn normalize_e164(input: &str) -> Result<String> {
    let cleaned = strip_separators(input.trim());
    let digits = if let Some(rest) = cleaned.strip_prefix('+') {
        rest
    } else if let Some(rest) = cleaned.strip_prefix("00") {
        rest
    } else {
        return Err(invalid(format!(
            "{input:?} is not an international phone number: start it with + and the \
             country code, e.g. +44 20 7946 0958"
        )));
    };
    check_digits(input, digits)
}

fn check_digits(input: &str, digits: &str) -> Result<String> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(format!(
            "{input:?} is not a phone number: only digits, spaces, dashes, dots and \
             parentheses are allowed after the +"
        )));
    }
    if digits.starts_with('0') {
        return Err(invalid(format!(
            "{input:?}: a country code never starts with 0"
        )));
    }
    if !(8..=15).contains(&digits.len()) {
        return Err(invalid(format!(
            "{input:?}: an international number has 8 to 15 digits with its country code"
        )));
    }
    Ok(format!("+{digits}"))
}

/// A number given as a country (ISO 3166-1 alpha-2) and a phone number, as in
/// `m.id.phone` and `requestToken`. A number already in international form
/// (`+` or `00`) is taken as it is, whatever the country.
pub fn from_country(country: &str, phone: &str) -> Result<String> {
    let cleaned = strip_separators(phone.trim());
    if cleaned.starts_with('+') || cleaned.starts_with("00") {
        return normalize_e164(phone);
    }
    let country = country.trim().to_ascii_uppercase();
    let Some((_, code)) = CALLING_CODES.iter().find(|(c, _)| *c == country) else {
        return Err(invalid(format!(
            "Country {country:?} is not supported here; send the number in international \
             form (+ and the country code) instead"
        )));
    };
    let mut national = cleaned.as_str();
    if *code == "1" {
        // North American numbers are sometimes written with the 1 in front.
        if national.len() == 11 {
            national = national.strip_prefix('1').unwrap_or(national);
        }
    } else if !KEEPS_LEADING_ZERO.contains(&country.as_str()) {
        national = national.strip_prefix('0').unwrap_or(national);
    }
    check_digits(phone, &format!("{code}{national}"))
}

/// The Matrix 3PID address of a normalised number: its digits without the `+`.
pub fn msisdn_address(e164: &str) -> &str {
    e164.strip_prefix('+').unwrap_or(e164)
}

/// Reads a 3PID address (`447700900123`, with or without `+`) as a number.
pub fn from_msisdn_address(address: &str) -> Result<String> {
    let cleaned = strip_separators(address.trim());
    if cleaned.starts_with('+') || cleaned.starts_with("00") {
        normalize_e164(address)
    } else {
        check_digits(address, &cleaned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn international_forms_normalise() {
        assert_eq!(normalize_e164("+44 20 7946-0958").unwrap(), "+442079460958");
        assert_eq!(
            normalize_e164("0049 (30) 1234.5678").unwrap(),
            "+493012345678"
        );
        assert_eq!(msisdn_address("+493012345678"), "493012345678");
        assert_eq!(
            from_msisdn_address("493012345678").unwrap(),
            "+493012345678"
        );
    }

    #[test]
    fn national_and_malformed_numbers_are_refused() {
        for bad in [
            "020 7946 0958",
            "+",
            "+12345",
            "+1234567890123456",
            "+0441234567",
            "+44abc12345",
            "",
        ] {
            let e = normalize_e164(bad).unwrap_err();
            assert!(
                matches!(e.kind(), ruma::api::error::ErrorKind::InvalidParam),
                "{bad}"
            );
        }
    }

    #[test]
    fn country_and_national_number() {
        assert_eq!(
            from_country("GB", "020 7946 0958").unwrap(),
            "+442079460958"
        );
        assert_eq!(from_country("de", "030 12345678").unwrap(), "+493012345678");
        assert_eq!(from_country("IT", "06 1234 5678").unwrap(), "+390612345678");
        assert_eq!(
            from_country("US", "(415) 555-0100").unwrap(),
            "+14155550100"
        );
        assert_eq!(
            from_country("US", "1 415 555 0100").unwrap(),
            "+14155550100"
        );
        assert_eq!(
            from_country("XX", "+44 20 7946 0958").unwrap(),
            "+442079460958"
        );
        assert!(from_country("XX", "020 7946 0958").is_err());
    }
}
