//! RFC 3339 times (`2025-01-15T10:30:00Z`, `2025-01-15T18:30:00.5+08:00`) to
//! epoch milliseconds, for the age of a cached JSON document. Pure code; only
//! the profile RFC 3339 defines (a space or `t` for `T`, `z` for `Z`), no
//! time zone names, no leap-second table (`:60` reads as the next second).

/// Epoch milliseconds of an RFC 3339 date-time, or None when `text` is not one.
pub fn epoch_ms(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        digits.iter().try_fold(0i64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    let sep = |at: usize, c: u8| b.get(at) == Some(&c);
    if !(sep(4, b'-') && sep(7, b'-') && matches!(b[10], b'T' | b't' | b' ')) {
        return None;
    }
    if !(sep(13, b':') && sep(16, b':')) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    // Fraction: milliseconds kept, further digits read and dropped.
    let mut at = 19;
    let mut millis = 0i64;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            if at - start < 3 {
                millis = millis * 10 + i64::from(b[at] - b'0');
            }
            at += 1;
        }
        if at == start {
            return None;
        }
        for _ in (at - start)..3 {
            millis *= 10;
        }
    }
    let offset_min = match b.get(at)? {
        b'Z' | b'z' if at + 1 == b.len() => 0,
        &sign @ (b'+' | b'-') if at + 6 == b.len() && sep(at + 3, b':') => {
            let (h, m) = (num(at + 1, 2)?, num(at + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let minutes = h * 60 + m;
            if sign == b'-' {
                -minutes
            } else {
                minutes
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    Some(seconds * 1000 + millis)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (Howard
/// Hinnant's days_from_civil).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::epoch_ms;

    #[test]
    fn reads_the_forms_rfc_3339_allows() {
        let cases = [
            ("1970-01-01T00:00:00Z", 0),
            ("2025-01-15T10:30:00Z", 1_736_937_000_000),
            ("2025-01-15t10:30:00z", 1_736_937_000_000),
            ("2025-01-15 10:30:00Z", 1_736_937_000_000),
            ("2025-01-15T18:30:00+08:00", 1_736_937_000_000),
            ("2025-01-15T05:00:00-05:30", 1_736_937_000_000),
            ("2025-01-15T10:30:00.5Z", 1_736_937_000_500),
            ("2025-01-15T10:30:00.123456789Z", 1_736_937_000_123),
            ("2024-02-29T00:00:00Z", 1_709_164_800_000),
            ("2000-03-01T00:00:00Z", 951_868_800_000),
            ("1969-12-31T23:59:59Z", -1000),
        ];
        for (text, ms) in cases {
            assert_eq!(epoch_ms(text), Some(ms), "{text}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_date_time() {
        for text in [
            "",
            "2025-01-15",
            "2025-01-15T10:30:00",
            "2025-01-15T10:30Z",
            "2025-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2025-04-31T00:00:00Z",
            "2025-01-15T24:00:00Z",
            "2025-01-15T10:60:00Z",
            "2025-01-15T10:30:00.Z",
            "2025-01-15T10:30:00+0800",
            "2025-01-15T10:30:00+24:00",
            "2025-01-15T10:30:00Z ",
            "2025-01-15T10:30:00 UTC",
            "+2025-01-15T10:30:00Z",
            "２０２５-01-15T10:30:00Z",
            "1736937000",
        ] {
            assert_eq!(epoch_ms(text), None, "{text:?}");
        }
    }
}
