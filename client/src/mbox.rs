//! The mbox format, as MDAs write it: a `From ` separator line, the
//! message with body lines that look like separators quoted (mboxrd:
//! `>*From ` gains one more `>`), and a blank line after the message.

use std::time::{SystemTime, UNIX_EPOCH};

/// Render `message` as one mbox entry. If it already starts with a
/// `From ` line, that line is kept as the separator (as procmail does);
/// otherwise one is made from `sender` and `when` (asctime format, UTC).
/// `mailbox_tail` is the last two bytes of the mailbox (fewer if it is
/// shorter): newlines are added first so that the separator follows a
/// blank line, as mbox readers expect.
pub fn entry(message: &[u8], sender: &str, when: SystemTime, mailbox_tail: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 128);
    out.extend_from_slice(separator_padding(mailbox_tail));
    let body = if message.starts_with(b"From ") {
        let end = message
            .iter()
            .position(|&b| b == b'\n')
            .map_or(message.len(), |i| i + 1);
        out.extend_from_slice(&message[..end]);
        if !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        &message[end..]
    } else {
        out.extend_from_slice(
            format!("From {} {}\n", clean_sender(sender), asctime(when)).as_bytes(),
        );
        message
    };
    for line in body.split_inclusive(|&b| b == b'\n') {
        if is_separator_like(line) {
            out.push(b'>');
        }
        out.extend_from_slice(line);
    }
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

/// The newlines needed after a mailbox ending in `tail` before a new
/// `From ` line.
fn separator_padding(tail: &[u8]) -> &'static [u8] {
    match tail {
        [] | [b'\n'] | [b'\n', b'\n'] => b"",
        [.., b'\n'] => b"\n",
        _ => b"\n\n",
    }
}

/// `From ` preceded by any number of `>`.
fn is_separator_like(line: &[u8]) -> bool {
    let unquoted = &line[line.iter().take_while(|&&b| b == b'>').count()..];
    unquoted.starts_with(b"From ")
}

/// A sender fit for the separator line: no spaces or control characters.
fn clean_sender(sender: &str) -> String {
    let s: String = sender
        .chars()
        .filter(|c| !c.is_whitespace() && !c.is_control())
        .take(256)
        .collect();
    if s.is_empty() {
        "MAILER-DAEMON".into()
    } else {
        s
    }
}

/// `Mon Nov 23 10:00:00 2026`, in UTC.
pub fn asctime(when: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = when
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {}",
        DAYS[(days % 7) as usize],
        MONTHS[(m - 1) as usize],
        d,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        y
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn asctime_matches_known_dates() {
        assert_eq!(asctime(UNIX_EPOCH), "Thu Jan  1 00:00:00 1970");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_430_400); // 2026-11-23 10:40 UTC
        assert_eq!(asctime(t), "Mon Nov 23 10:40:00 2026");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(asctime(leap), "Tue Feb 29 00:00:00 2000");
    }

    #[test]
    fn separator_quoting_and_trailing_blank_line() {
        let e = entry(
            b"Subject: x\n\nFrom here\n>From there\nFromage\nlast",
            "a b@c",
            UNIX_EPOCH,
            b"",
        );
        let text = String::from_utf8(e).unwrap();
        assert_eq!(
            text,
            "From ab@c Thu Jan  1 00:00:00 1970\nSubject: x\n\n>From here\n>>From there\nFromage\nlast\n\n"
        );
    }

    #[test]
    fn existing_from_line_is_kept_and_newline_fixed() {
        let e = entry(
            b"From x@y Mon Jan  1 00:00:00 2001\nbody\n",
            "ignored",
            UNIX_EPOCH,
            b"t\n",
        );
        assert_eq!(e, b"\nFrom x@y Mon Jan  1 00:00:00 2001\nbody\n\n");
        let e = entry(b"x", "s", UNIX_EPOCH, b"zt");
        assert!(e.starts_with(b"\n\nFrom s "));
        let e = entry(b"x", "s", UNIX_EPOCH, b"\n\n");
        assert!(e.starts_with(b"From s "));
    }
}
