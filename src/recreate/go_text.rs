//! Texts kruise-daemon produces through Go's standard library, reproduced byte for byte
//! where they end up in a CRR status or an event: `strconv.Quote` (`%q`), the errors of
//! `time.Parse(time.RFC3339, ..)` (§4.4 step 4) and gRPC status errors (§4.4 step 5.6,
//! `kill container error: <err>`).

use k8s_openapi::jiff::Timestamp;

use crate::cri::CriError;
use crate::cri::error::code_label;

/// Go's `strconv.Quote`, which `fmt`'s `%q` uses for strings: printable characters stay,
/// `"` and `\` are escaped, the C escapes are used where they exist, other control
/// characters become `\xNN` (`\uNNNN` above U+007F).
pub(crate) fn quote(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for character in value.chars() {
        match character {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\u{7}' => quoted.push_str("\\a"),
            '\u{8}' => quoted.push_str("\\b"),
            '\u{c}' => quoted.push_str("\\f"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            '\u{b}' => quoted.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                quoted.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => quoted.push_str(&format!("\\u{:04x}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// How grpc-go prints a status error: `rpc error: code = NotFound desc = <message>`.
/// The cri-client kruise uses returns these unchanged, so they are what kruise writes into
/// `kill container error: <err>`.
pub(crate) fn cri_error_text(error: &CriError) -> String {
    match error {
        CriError::Call { code, message, .. } => {
            format!("rpc error: code = {} desc = {message}", code_label(*code))
        }
        CriError::DeadlineExceeded { .. } => {
            "rpc error: code = DeadlineExceeded desc = context deadline exceeded".to_owned()
        }
        other => other.to_string(),
    }
}

/// Go's `time.RFC3339` layout, named in parse errors.
const RFC3339_LAYOUT: &str = "2006-01-02T15:04:05Z07:00";

/// Why a string is not an RFC 3339 time, worded exactly as Go's `*time.ParseError`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct GoTimeParseError(String);

/// The elements of the RFC 3339 layout, each with the literal text before it.
#[derive(Clone, Copy)]
enum Element {
    LongYear,
    ZeroMonth,
    ZeroDay,
    Hour,
    ZeroMinute,
    ZeroSecond,
    Iso8601ColonTimeZone,
}

/// `2006-01-02T15:04:05Z07:00` cut the way Go's `nextStdChunk` cuts it:
/// (literal prefix, element, the element's layout text).
const CHUNKS: [(&[u8], Element, &str); 7] = [
    (b"", Element::LongYear, "2006"),
    (b"-", Element::ZeroMonth, "01"),
    (b"-", Element::ZeroDay, "02"),
    (b"T", Element::Hour, "15"),
    (b":", Element::ZeroMinute, "04"),
    (b":", Element::ZeroSecond, "05"),
    (b"", Element::Iso8601ColonTimeZone, "Z07:00"),
];

/// Go's `time.Parse(time.RFC3339, value)`: what it accepts and, on failure, its error text.
///
/// Go first tries a strict fast path and, when that fails, its general layout parser, which
/// accepts a superset (for example a one-digit hour or an offset of up to 24:60) and produces
/// the error. So this is the general parser, restricted to the one layout.
pub(crate) fn parse_rfc3339(original: &str) -> Result<Timestamp, GoTimeParseError> {
    let cannot_parse = |value: &[u8], element: &str| {
        GoTimeParseError(format!(
            "parsing time {} as {}: cannot parse {} as {}",
            time_quote(original.as_bytes()),
            time_quote(RFC3339_LAYOUT.as_bytes()),
            time_quote(value),
            time_quote(element.as_bytes()),
        ))
    };
    let with_message = |message: String| {
        GoTimeParseError(format!(
            "parsing time {}{message}",
            time_quote(original.as_bytes())
        ))
    };

    let mut value = original.as_bytes();
    let (mut year, mut month, mut day) = (0_i64, 0_i64, 0_i64);
    let (mut hour, mut minute, mut second, mut nanosecond) = (0_i64, 0_i64, 0_i64, 0_i64);
    let mut offset_seconds = 0_i64;
    for (prefix, element, layout_text) in CHUNKS {
        // Go's `skip`: the literal must match byte for byte.
        if !prefix.is_empty() {
            if value.first() != prefix.first() {
                return Err(cannot_parse(
                    value,
                    std::str::from_utf8(prefix).unwrap_or_default(),
                ));
            }
            value = &value[1..];
        }
        let hold = value;
        let mut range_error: Option<&str> = None;
        let parsed: Result<(), ()> = match element {
            Element::LongYear => {
                if value.len() < 4 || !is_digit(value, 0) {
                    Err(())
                } else {
                    let (digits, rest) = value.split_at(4);
                    value = rest;
                    go_atoi(digits).map(|parsed| year = parsed)
                }
            }
            Element::ZeroMonth => get_number(value, true).map(|(parsed, rest)| {
                value = rest;
                month = parsed;
                if !(1..=12).contains(&month) {
                    range_error = Some("month");
                }
            }),
            Element::ZeroDay => get_number(value, true).map(|(parsed, rest)| {
                // Any two digits; the day is checked against the month at the end.
                value = rest;
                day = parsed;
            }),
            Element::Hour => get_number(value, false).map(|(parsed, rest)| {
                value = rest;
                hour = parsed;
                if hour >= 24 {
                    range_error = Some("hour");
                }
            }),
            Element::ZeroMinute => get_number(value, true).map(|(parsed, rest)| {
                value = rest;
                minute = parsed;
                if minute >= 60 {
                    range_error = Some("minute");
                }
            }),
            Element::ZeroSecond => get_number(value, true).map(|(parsed, rest)| {
                value = rest;
                second = parsed;
                if second >= 60 {
                    range_error = Some("second");
                } else if value.len() >= 2
                    && (value[0] == b'.' || value[0] == b',')
                    && is_digit(value, 1)
                {
                    // A fractional second the layout does not mention is still accepted.
                    let mut end = 2;
                    while end < value.len() && is_digit(value, end) {
                        end += 1;
                    }
                    let kept = end.min(10);
                    let digits = &value[1..kept];
                    let mut fraction = go_atoi(digits).unwrap_or(0);
                    for _ in 0..(10 - kept) {
                        fraction *= 10;
                    }
                    nanosecond = fraction;
                    value = &value[end..];
                }
            }),
            Element::Iso8601ColonTimeZone => {
                if value.first() == Some(&b'Z') {
                    value = &value[1..];
                    Ok(())
                } else if value.len() < 6 || value[3] != b':' {
                    Err(())
                } else {
                    let (sign, hours, minutes) = (value[0], &value[1..3], &value[4..6]);
                    value = &value[6..];
                    let hours = get_number(hours, true);
                    let minutes = hours.and_then(|_| get_number(minutes, true));
                    let offset_hours = hours.map_or(0, |(parsed, _)| parsed);
                    let offset_minutes = minutes.map_or(0, |(parsed, _)| parsed);
                    // Go compares with `>` here: offsets of 24 hours or 60 minutes pass.
                    if offset_hours > 24 {
                        range_error = Some("time zone offset hour");
                    }
                    if offset_minutes > 60 {
                        range_error = Some("time zone offset minute");
                    }
                    offset_seconds = (offset_hours * 60 + offset_minutes) * 60;
                    match (minutes, sign) {
                        (Err(()), _) => Err(()),
                        (Ok(_), b'+') => Ok(()),
                        (Ok(_), b'-') => {
                            offset_seconds = -offset_seconds;
                            Ok(())
                        }
                        (Ok(_), _) => Err(()),
                    }
                }
            }
        };
        if let Some(what) = range_error {
            return Err(with_message(format!(": {what} out of range")));
        }
        if parsed.is_err() {
            return Err(cannot_parse(hold, layout_text));
        }
    }
    if !value.is_empty() {
        return Err(with_message(format!(": extra text: {}", time_quote(value))));
    }
    if day < 1 || day > days_in_month(month, year) {
        return Err(with_message(": day out of range".to_owned()));
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second
        - offset_seconds;
    let nanosecond = i32::try_from(nanosecond).unwrap_or_default();
    Timestamp::new(seconds, nanosecond).map_err(|error| with_message(format!(": {error}")))
}

fn is_digit(value: &[u8], index: usize) -> bool {
    value.get(index).is_some_and(u8::is_ascii_digit)
}

/// Go's `getnum`: one or two digits (exactly two when `fixed`), and the rest.
fn get_number(value: &[u8], fixed: bool) -> Result<(i64, &[u8]), ()> {
    if !is_digit(value, 0) {
        return Err(());
    }
    if !is_digit(value, 1) {
        if fixed {
            return Err(());
        }
        return Ok((i64::from(value[0] - b'0'), &value[1..]));
    }
    Ok((
        i64::from(value[0] - b'0') * 10 + i64::from(value[1] - b'0'),
        &value[2..],
    ))
}

/// Go's `time.atoi` on digits only (the callers never pass a sign).
fn go_atoi(digits: &[u8]) -> Result<i64, ()> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(());
    }
    Ok(digits
        .iter()
        .fold(0_i64, |number, digit| number * 10 + i64::from(digit - b'0')))
}

fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(month: i64, year: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The quoting of Go's `time` package (not `strconv`'s): every byte outside printable ASCII
/// becomes `\xNN`, and `"` and `\` are escaped.
fn time_quote(value: &[u8]) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for &byte in value {
        match byte {
            b'"' | b'\\' => {
                quoted.push('\\');
                quoted.push(char::from(byte));
            }
            0x20..=0x7f => quoted.push(char::from(byte)),
            _ => quoted.push_str(&format!("\\x{byte:02x}")),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(value: &str) -> String {
        parse_rfc3339(value).unwrap_err().to_string()
    }

    #[test]
    fn parses_utc_offsets_and_fractions_like_go() {
        let parsed = |value: &str| parse_rfc3339(value).unwrap().to_string();
        assert_eq!(parsed("2024-05-06T07:08:09Z"), "2024-05-06T07:08:09Z");
        assert_eq!(parsed("2024-05-06T07:08:09+02:00"), "2024-05-06T05:08:09Z");
        assert_eq!(parsed("2024-05-06T07:08:09-01:30"), "2024-05-06T08:38:09Z");
        assert_eq!(
            parsed("2024-05-06T07:08:09.123456789123Z"),
            "2024-05-06T07:08:09.123456789Z"
        );
        assert_eq!(parsed("2024-02-29T00:00:00Z"), "2024-02-29T00:00:00Z");
        // Go's general parser takes a one-digit hour, and so does time.Parse.
        assert_eq!(parsed("2024-05-06T7:08:09Z"), "2024-05-06T07:08:09Z");
        assert_eq!(parsed("1970-01-01T00:00:00Z"), "1970-01-01T00:00:00Z");
    }

    // Each expected text is what Go 1.23's time.Parse(time.RFC3339, value) returns.
    #[test]
    fn errors_are_go_parse_errors_word_for_word() {
        assert_eq!(
            error_of("yesterday"),
            r#"parsing time "yesterday" as "2006-01-02T15:04:05Z07:00": cannot parse "yesterday" as "2006""#
        );
        assert_eq!(
            error_of(""),
            r#"parsing time "" as "2006-01-02T15:04:05Z07:00": cannot parse "" as "2006""#
        );
        assert_eq!(
            error_of("2024-05-06"),
            r#"parsing time "2024-05-06" as "2006-01-02T15:04:05Z07:00": cannot parse "" as "T""#
        );
        assert_eq!(
            error_of("2024-05-06 07:08:09Z"),
            r#"parsing time "2024-05-06 07:08:09Z" as "2006-01-02T15:04:05Z07:00": cannot parse " 07:08:09Z" as "T""#
        );
        assert_eq!(
            error_of("2024-5-06T07:08:09Z"),
            r#"parsing time "2024-5-06T07:08:09Z" as "2006-01-02T15:04:05Z07:00": cannot parse "5-06T07:08:09Z" as "01""#
        );
        assert_eq!(
            error_of("2024-05-06T07:08:09"),
            r#"parsing time "2024-05-06T07:08:09" as "2006-01-02T15:04:05Z07:00": cannot parse "" as "Z07:00""#
        );
        assert_eq!(
            error_of("2024-05-06T07:08:09+0200"),
            r#"parsing time "2024-05-06T07:08:09+0200" as "2006-01-02T15:04:05Z07:00": cannot parse "+0200" as "Z07:00""#
        );
        assert_eq!(
            error_of("2024-13-06T07:08:09Z"),
            r#"parsing time "2024-13-06T07:08:09Z": month out of range"#
        );
        assert_eq!(
            error_of("2023-02-29T07:08:09Z"),
            r#"parsing time "2023-02-29T07:08:09Z": day out of range"#
        );
        assert_eq!(
            error_of("2024-05-06T24:08:09Z"),
            r#"parsing time "2024-05-06T24:08:09Z": hour out of range"#
        );
        assert_eq!(
            error_of("2024-05-06T07:08:09Zjunk"),
            r#"parsing time "2024-05-06T07:08:09Zjunk": extra text: "junk""#
        );
        assert_eq!(
            error_of("2024-05-06T07:08:09+25:00"),
            r#"parsing time "2024-05-06T07:08:09+25:00": time zone offset hour out of range"#
        );
        assert_eq!(
            error_of("2024-05-06T07:08:09*02:00"),
            r#"parsing time "2024-05-06T07:08:09*02:00" as "2006-01-02T15:04:05Z07:00": cannot parse "*02:00" as "Z07:00""#
        );
    }

    #[test]
    fn time_quoting_escapes_bytes_outside_printable_ascii() {
        assert_eq!(
            error_of("\"é\""),
            r#"parsing time "\"\xc3\xa9\"" as "2006-01-02T15:04:05Z07:00": cannot parse "\"\xc3\xa9\"" as "2006""#
        );
    }

    #[test]
    fn strconv_quote_keeps_printable_unicode_and_escapes_controls() {
        assert_eq!(quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(quote("tab\there\n"), r#""tab\there\n""#);
        assert_eq!(quote("\u{1}é"), "\"\\x01é\"");
    }

    #[test]
    fn grpc_errors_read_like_grpc_go() {
        let error = CriError::Call {
            method: "StopContainer",
            code: tonic::Code::NotFound,
            message: "an error occurred when try to find container \"abc\": not found".into(),
        };
        assert_eq!(
            cri_error_text(&error),
            "rpc error: code = NotFound desc = an error occurred when try to find container \"abc\": not found"
        );
    }
}
