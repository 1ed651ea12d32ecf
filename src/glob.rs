//! Redis glob patterns (`SCAN MATCH`, `KEYS`) over bytes: `*`, `?`, `[abc]`,
//! `[^a-z]` and `\` escapes, matching what Redis itself matches.

/// Whether `pattern` matches all of `text`.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where to resume after the last `*`: (pattern index after it, text index).
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    while p < pattern.len() && pattern[p] == b'*' {
                        p += 1;
                    }
                    star = Some((p, t));
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class_match(pattern, p, text[t]) {
                        if matched {
                            p = next;
                            t += 1;
                            continue;
                        }
                    } else if text[t] == b'[' {
                        // An unterminated class is a literal '['.
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() => {
                    if pattern[p + 1] == text[t] {
                        p += 2;
                        t += 1;
                        continue;
                    }
                }
                c => {
                    if c == text[t] {
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, st)) => {
                p = sp;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at `pattern[start] == '['`. Returns
/// whether it matched and the index after the class, or None when unterminated.
fn class_match(pattern: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let &b = pattern.get(i)?;
        if b == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if b == b'\\' && i + 1 < pattern.len() {
            matched |= pattern[i + 1] == c;
            i += 2;
        } else if pattern.get(i + 1) == Some(&b'-')
            && pattern.get(i + 2).is_some_and(|&e| e != b']')
        {
            let (lo, hi) = (b.min(pattern[i + 2]), b.max(pattern[i + 2]));
            matched |= (lo..=hi).contains(&c);
            i += 3;
        } else {
            matched |= b == c;
            i += 1;
        }
    }
}

/// A pattern that would match every key (only `*`s, or empty): PURGE refuses it.
pub fn matches_everything(pattern: &[u8]) -> bool {
    pattern.iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_and_questions() {
        assert!(glob_match(b"user:*:cost*", b"user:4:cost_weekly"));
        assert!(glob_match(b"user:*:cost*", b"user::cost"));
        assert!(!glob_match(b"user:*:cost*", b"user:4:spend"));
        assert!(glob_match(b"a?c", b"abc"));
        assert!(!glob_match(b"a?c", b"ac"));
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"**x**", b"abxcd"));
        assert!(!glob_match(b"", b"a"));
        assert!(glob_match(b"*a*b", b"xxaxxab"));
    }

    #[test]
    fn classes_ranges_and_negation() {
        assert!(glob_match(b"k[0-9]", b"k7"));
        assert!(!glob_match(b"k[0-9]", b"kx"));
        assert!(glob_match(b"k[^0-9]", b"kx"));
        assert!(!glob_match(b"k[^0-9]", b"k1"));
        assert!(glob_match(b"k[abc]", b"kb"));
        assert!(
            glob_match(b"k[9-0]", b"k5"),
            "reversed ranges work as in Redis"
        );
        assert!(glob_match(b"k[]]", b"k]"));
    }

    #[test]
    fn escapes_make_metachars_literal() {
        assert!(glob_match(b"user:\\*:x", b"user:*:x"));
        assert!(!glob_match(b"user:\\*:x", b"user:4:x"));
        assert!(glob_match(b"a\\?", b"a?"));
        assert!(glob_match(b"a\\[b", b"a[b"));
        assert!(
            glob_match(b"a[b", b"a[b"),
            "an unterminated class is literal"
        );
    }

    #[test]
    fn binary_bytes_match_themselves() {
        assert!(glob_match(b"k:\xff*", b"k:\xff\x00z"));
        assert!(!glob_match(b"k:\xfe*", b"k:\xff"));
    }

    #[test]
    fn everything_patterns() {
        assert!(matches_everything(b""));
        assert!(matches_everything(b"***"));
        assert!(!matches_everything(b"user:*"));
    }
}
