//! Text from outside (key names, ids, arguments, values, PostgreSQL errors) shown
//! safely: in replies, error lines, messages and log lines. One place decides how
//! bytes that are not UTF-8, control characters and huge values are written, so
//! every surface shows the same bytes the same way.

use std::borrow::Cow;
use std::fmt::Write;

/// Valid UTF-8 runs as they are, each invalid byte as `\xNN`: exact and
/// reversible, so replies may hold any key name.
pub fn bytes_as_text(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        text.push_str(chunk.valid());
        for b in chunk.invalid() {
            let _ = write!(text, "\\x{b:02x}");
        }
    }
    text
}

/// `text` on one line: control characters (CR, LF, NUL, ...) as `\xNN`. Error
/// replies and log lines cannot hold a line break, and C strings no NUL.
pub fn one_line(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `text` cut to `max_chars` characters with `...(N bytes)` naming its whole
/// length: a 64 KB key name written whole into every message stalls Redis.
pub fn clip(text: &str, max_chars: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max_chars) {
        None => Cow::Borrowed(text),
        Some((end, _)) => Cow::Owned(format!("{}...({} bytes)", &text[..end], text.len())),
    }
}

/// Outside bytes as a message shows them: [`bytes_as_text`], on [`one_line`],
/// cut to `max_chars` characters with `...(N bytes)` naming the bytes' whole
/// length. Only the prefix that can show is escaped: escaping a 4 MB argument
/// whole cost the main thread 100 ms.
pub fn shown(bytes: &[u8], max_chars: usize) -> String {
    // One shown character takes at most 4 bytes, so this prefix yields more
    // than `max_chars` characters whenever it is not the whole input.
    let head = &bytes[..bytes
        .len()
        .min(max_chars.saturating_add(1).saturating_mul(4))];
    let text = bytes_as_text(head);
    let text = one_line(&text);
    match text.char_indices().nth(max_chars) {
        None => text.into_owned(),
        Some((end, _)) => format!("{}...({} bytes)", &text[..end], bytes.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_as_text_keeps_utf8_and_escapes_the_rest() {
        assert_eq!(bytes_as_text(b"user:4"), "user:4");
        assert_eq!(bytes_as_text(b"a\xffb\xc3"), "a\\xffb\\xc3");
        assert_eq!(bytes_as_text("é".as_bytes()), "é");
        // Control characters are data here: replies carry them exactly.
        assert_eq!(bytes_as_text(b"a\nb"), "a\nb");
    }

    #[test]
    fn one_line_escapes_control_characters_only() {
        assert_eq!(one_line("user:4:cost"), "user:4:cost");
        assert_eq!(one_line("a\0b\nc\u{85}é"), "a\\x00b\\x0ac\\x85é");
        assert_eq!(one_line("100%n %s %%"), "100%n %s %%");
        assert!(matches!(one_line("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn clip_cuts_by_characters_and_names_the_length() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip(&"ü".repeat(10), 10), "ü".repeat(10));
        assert_eq!(
            clip(&"ü".repeat(11), 10),
            format!("{}...(22 bytes)", "ü".repeat(10))
        );
        let huge = "x".repeat(1 << 20);
        assert_eq!(clip(&huge, 3), "xxx...(1048576 bytes)");
    }

    #[test]
    fn shown_is_one_short_line_of_exact_bytes() {
        assert_eq!(shown(b"abc", 64), "abc");
        assert_eq!(shown(b"", 64), "");
        assert_eq!(shown(b"a\xff\r\nb", 64), "a\\xff\\x0d\\x0ab");
        assert_eq!(shown(&[b'x'; 100], 4), "xxxx...(100 bytes)");
    }

    #[test]
    fn shown_cuts_without_escaping_everything_and_names_the_input_length() {
        assert_eq!(shown(b"plain", 10), "plain");
        assert_eq!(shown(b"a\r\nb", 10), "a\\x0d\\x0ab");
        let crs = vec![b'\r'; 100];
        // Escapes count as the characters they show.
        assert_eq!(shown(&crs, 8), "\\x0d\\x0d...(100 bytes)");
        let huge = vec![0xffu8; 4 << 20];
        assert_eq!(shown(&huge, 8), "\\xff\\xff...(4194304 bytes)");
        // Exactly max_chars shown characters are not cut.
        assert_eq!(shown("üü".as_bytes(), 2), "üü");
    }
}
