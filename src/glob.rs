//! Redis glob patterns (`SCAN MATCH`, `KEYS`) over bytes: `*`, `?`, `[abc]`,
//! `[^a-z]` and `\` escapes, matching exactly what Redis itself matches.
//!
//! A port of Redis 7.0's `stringmatchlen` (util.c), quirks included, so that
//! `CONSISTENCY.PURGE MATCH p` deletes the very keys `redis-cli --scan --pattern p`
//! lists: an unterminated class ends with the pattern (`a[bc` matches `ab`), `]`
//! right after `[` closes an empty class (`[]]` matches nothing), `-` before `]`
//! makes a range up to `]` (`[a-]`), a lone trailing `\` is literal, range ends
//! compare as C `char`s, and the `*` back-off that keeps the worst case polynomial.
//! Like newer Redis, a pattern that nests `*` more than [`MAX_NESTING`] deep
//! matches nothing: each `*` is a recursion, and a hostile pattern (`*?` repeated
//! a million times) would otherwise overflow a worker's stack and kill Redis.

use std::ffi::c_char;

/// Whether `pattern` matches all of `text`, as Redis's SCAN MATCH and KEYS decide.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    // SCAN and KEYS take a lone `*` as "every key" without matching (the empty
    // key name included).
    if pattern == b"*" {
        return true;
    }
    let mut skip_longer = false;
    match_at(pattern, 0, text, 0, &mut skip_longer, 0)
}

/// How deep `*` may recurse before a pattern is taken to match nothing.
pub const MAX_NESTING: usize = 1000;

/// A byte as C compares it in a range: `char`, signed or not as the platform's.
fn as_c_char(b: u8) -> i32 {
    i32::from(b as c_char)
}

/// `stringmatchlen_impl` from `pattern[p..]` and `text[t..]`. Redis reads the
/// byte after a pattern's end (its NUL terminator): `at` gives 0 there.
fn match_at(
    pattern: &[u8],
    mut p: usize,
    text: &[u8],
    mut t: usize,
    skip_longer: &mut bool,
    nesting: usize,
) -> bool {
    if nesting > MAX_NESTING {
        return false;
    }
    let at = |i: usize| pattern.get(i).copied().unwrap_or(0);
    let left = |p: usize| pattern.len() - p;
    while left(p) > 0 && t < text.len() {
        match pattern[p] {
            b'*' => {
                while left(p) > 0 && at(p + 1) == b'*' {
                    p += 1;
                }
                if left(p) == 1 {
                    return true;
                }
                while t < text.len() {
                    if match_at(pattern, p + 1, text, t, skip_longer, nesting + 1) {
                        return true;
                    }
                    if *skip_longer {
                        return false;
                    }
                    t += 1;
                }
                // The rest matches nowhere in what is left of the text: no
                // earlier `*` can make it match by taking more.
                *skip_longer = true;
                return false;
            }
            b'?' => t += 1,
            b'[' => {
                p += 1;
                let negate = at(p) == b'^';
                if negate {
                    p += 1;
                }
                let c = text[t];
                let mut matched = false;
                loop {
                    if at(p) == b'\\' && left(p) >= 2 {
                        p += 1;
                        matched |= pattern[p] == c;
                    } else if at(p) == b']' {
                        break;
                    } else if left(p) == 0 {
                        // Unterminated: the class ends with the pattern.
                        p -= 1;
                        break;
                    } else if left(p) >= 3 && pattern[p + 1] == b'-' {
                        let (a, b) = (as_c_char(pattern[p]), as_c_char(pattern[p + 2]));
                        let (lo, hi) = (a.min(b), a.max(b));
                        p += 2;
                        matched |= (lo..=hi).contains(&as_c_char(c));
                    } else {
                        matched |= pattern[p] == c;
                    }
                    p += 1;
                }
                if matched == negate {
                    return false;
                }
                t += 1;
            }
            first => {
                let literal = if first == b'\\' && left(p) >= 2 {
                    p += 1;
                    pattern[p]
                } else {
                    first
                };
                if literal != text[t] {
                    return false;
                }
                t += 1;
            }
        }
        p += 1;
        if t == text.len() {
            while at(p) == b'*' {
                p += 1;
            }
            break;
        }
    }
    left(p) == 0 && t == text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_star_nesting_matches_nothing_instead_of_overflowing() {
        // A million `*?` against a long key: without the limit this recursed
        // once per character of the key.
        let pattern = b"*?".repeat(500_000);
        let key = vec![b'k'; 100_000];
        assert!(!glob_match(&pattern, &key));
        // Within the limit, nesting still matches as Redis does.
        let pattern = b"*a".repeat(MAX_NESTING / 2);
        let key = b"a".repeat(MAX_NESTING / 2);
        assert!(glob_match(&pattern, &key));
    }

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
        assert!(
            !glob_match(b"k[]]", b"k]"),
            "as in Redis, `[]` is an empty class"
        );
        assert!(glob_match(b"k[^]", b"kz"), "and `[^]` any byte");
        assert!(
            glob_match(b"k[a-]", b"k]"),
            "`-` before `]` ranges up to `]`"
        );
        assert!(glob_match(b"k[a-]", b"k_"), "the range `]`..`a`");
        assert!(!glob_match(b"k[a-]", b"k-"));
    }

    #[test]
    fn escapes_make_metachars_literal() {
        assert!(glob_match(b"user:\\*:x", b"user:*:x"));
        assert!(!glob_match(b"user:\\*:x", b"user:4:x"));
        assert!(glob_match(b"a\\?", b"a?"));
        assert!(glob_match(b"a\\[b", b"a[b"));
        assert!(
            glob_match(b"a[bc", b"ac") && !glob_match(b"a[b", b"a[b"),
            "an unterminated class ends with the pattern, as in Redis"
        );
        assert!(!glob_match(b"*[", b"a["), "a lone `[` matches nothing");
        assert!(
            glob_match(b"a\\", b"a\\"),
            "a trailing backslash is literal"
        );
    }

    #[test]
    fn binary_bytes_match_themselves() {
        assert!(glob_match(b"k:\xff*", b"k:\xff\x00z"));
        assert!(!glob_match(b"k:\xfe*", b"k:\xff"));
    }

    #[test]
    fn stars_back_off_without_exponential_time() {
        let pattern = b"a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b".to_vec();
        let text = vec![b'a'; 5000];
        let started = std::time::Instant::now();
        assert!(!glob_match(&pattern, &text));
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
}
