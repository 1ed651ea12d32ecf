//! Argument parsing for CONSISTENCY.CHECK, FIX and PURGE.
//!
//! Works on the raw bytes of each argument after the command name. Keywords
//! are case-insensitive; values are kept as given. Rule names are not checked
//! against the loaded rules here: the caller does that.

use std::collections::HashSet;
use std::fmt;

/// Longest argument, in characters, that error messages quote whole.
const DISPLAY_MAX_CHARS: usize = 64;

/// An argument as error messages show it ([`crate::text::shown`]): one line,
/// exact bytes, cut so a huge argument never becomes a huge error.
pub fn display_arg(bytes: &[u8]) -> String {
    crate::text::shown(bytes, DISPLAY_MAX_CHARS)
}

/// Why a command's arguments were refused. `Display` gives the message
/// without the `ERR ` prefix; option names are shown upper-case and values
/// through [`display_arg`].
#[derive(Debug, Clone, PartialEq)]
pub enum ArgError {
    /// The option (named) was last, without its value.
    MissingValue(&'static str),
    /// The option's value (shown) is not a finite number >= 0.
    NotANumber {
        /// The option, e.g. `THRESHOLD`.
        option: &'static str,
        /// The value as given.
        got: String,
    },
    /// The option's value (shown) is not a plain decimal integer >= 0.
    NotAnInteger {
        /// The option, e.g. `LIMIT`.
        option: &'static str,
        /// The value as given.
        got: String,
    },
    /// The option's value (shown) is an integer too large for this machine.
    TooLarge {
        /// The option, e.g. `LIMIT`.
        option: &'static str,
        /// The value as given.
        got: String,
    },
    /// FORMAT's value (shown) is neither `resp` nor `json`.
    BadFormat(String),
    /// The option (named) was given an empty value.
    EmptyValue(&'static str),
    /// An argument (shown) that is no option of this command.
    UnknownOption(String),
    /// An argument (shown) after FIX's options that is no option; bare ids
    /// must come first, so this is a typo or a late id.
    UnknownFixOption(String),
    /// A single-valued option (named) was given more than once.
    GivenTwice(&'static str),
    /// Two options (named) that exclude each other.
    Conflict(&'static str, &'static str),
    /// The option (named) is valid only in `CONSISTENCY.FIX ALL`.
    OnlyWithFixAll(&'static str),
    /// `ALL` appeared after the first argument of FIX.
    AllNotFirst,
    /// FIX without ids and without ALL.
    NoFixTarget,
    /// PURGE without MATCH or RULE.
    NoPurgeTarget,
    /// PURGE MATCH with a pattern (shown) that matches every key.
    PurgeEverything(String),
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgError::MissingValue(option) => write!(f, "{option} needs a value"),
            ArgError::NotANumber { option, got } => {
                write!(f, "{option} must be a non-negative number, got '{got}'")
            }
            ArgError::NotAnInteger { option, got } => {
                write!(f, "{option} must be a non-negative integer, got '{got}'")
            }
            ArgError::TooLarge { option, got } => {
                write!(f, "{option} must be at most {}, got '{got}'", usize::MAX)
            }
            ArgError::BadFormat(got) => write!(f, "FORMAT must be resp or json, got '{got}'"),
            ArgError::EmptyValue(option) => write!(f, "{option} must not be empty"),
            ArgError::UnknownOption(got) => write!(f, "unknown option '{got}'"),
            ArgError::UnknownFixOption(got) => write!(
                f,
                "unknown option '{got}' (bare ids go before the first option; give later ids as ID <id>)"
            ),
            ArgError::GivenTwice(option) => write!(f, "{option} given twice"),
            ArgError::Conflict(first, second) => {
                write!(f, "{first} and {second} cannot be combined")
            }
            ArgError::OnlyWithFixAll(option) => write!(f, "{option} applies only to FIX ALL"),
            ArgError::AllNotFirst => write!(
                f,
                "ALL must be the first argument; to fix an id named ALL, give ID ALL"
            ),
            ArgError::NoFixTarget => write!(f, "FIX needs at least one id or ALL"),
            ArgError::NoPurgeTarget => write!(f, "PURGE needs MATCH pattern or RULE name"),
            ArgError::PurgeEverything(pattern) => write!(
                f,
                "MATCH pattern '{pattern}' would purge every key; name a narrower pattern"
            ),
        }
    }
}

impl std::error::Error for ArgError {}

/// How a command's reply is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyFormat {
    /// Native RESP maps and arrays.
    Resp,
    /// One bulk string holding a JSON object.
    Json,
}

impl ReplyFormat {
    /// The keyword, lower-case.
    pub fn name(&self) -> &'static str {
        match self {
            ReplyFormat::Resp => "resp",
            ReplyFormat::Json => "json",
        }
    }
}

/// `CONSISTENCY.CHECK [CHANGED] [RULE name]... [ID id]... [THRESHOLD n] [LIMIT n] [FORMAT resp|json]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CheckArgs {
    /// Selected rule names, de-duplicated in order; empty means all rules.
    pub rules: Vec<String>,
    /// Ids to check, de-duplicated in order; empty means scan every key.
    pub ids: Vec<Vec<u8>>,
    /// Overrides every selected rule's threshold.
    pub threshold: Option<f64>,
    /// Most entries to return; None means the default.
    pub limit: Option<usize>,
    /// Reply encoding; None means the default.
    pub format: Option<ReplyFormat>,
    /// Only the ids whose keys or truth changed since the last check.
    pub changed: bool,
}

/// Which keys FIX repairs.
#[derive(Debug, Clone, PartialEq)]
pub enum FixTarget {
    /// The selected rules' keys for these ids (non-empty, de-duplicated in
    /// order), repaired whatever their drift.
    Ids(Vec<Vec<u8>>),
    /// Check first, then repair only the verified drifted keys.
    All,
}

/// `CONSISTENCY.FIX id [id ...] [ID id]... [RULE name]... [DRYRUN] [REWRITE] [FORMAT resp|json]`
/// or `CONSISTENCY.FIX ALL [RULE name]... [THRESHOLD n] [DRYRUN] [REWRITE] [FORMAT resp|json]`.
#[derive(Debug, Clone, PartialEq)]
pub struct FixArgs {
    /// The ids given, or ALL.
    pub target: FixTarget,
    /// Selected rule names, de-duplicated in order; empty means all rules.
    pub rules: Vec<String>,
    /// Overrides the thresholds of FIX ALL's check (only with ALL).
    pub threshold: Option<f64>,
    /// Report what would be done without changing anything.
    pub dry_run: bool,
    /// With ids: set each key to the truth instead of deleting it. With ALL:
    /// rewrite drifted keys whose kind allows it (number, hash_field) even
    /// where the rule's `fix` is `delete`; rules with `fix: none` are still
    /// left alone, and other kinds follow their rule's policy.
    pub rewrite: bool,
    /// Reply encoding; None means the default.
    pub format: Option<ReplyFormat>,
    /// With ALL: check only the ids that changed since the last check.
    pub changed: bool,
}

/// What PURGE deletes.
#[derive(Debug, Clone, PartialEq)]
pub enum PurgeTarget {
    /// Keys matching this Redis glob.
    Match(Vec<u8>),
    /// Every key of the named rule.
    Rule(String),
}

/// `CONSISTENCY.PURGE (MATCH pattern | RULE name) [DRYRUN] [LIMIT n]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PurgeArgs {
    /// The keys to delete.
    pub target: PurgeTarget,
    /// Count the keys without deleting them.
    pub dry_run: bool,
    /// Most keys to delete; None means no limit.
    pub limit: Option<usize>,
}

const RULE: &str = "RULE";
const ID: &str = "ID";
const THRESHOLD: &str = "THRESHOLD";
const LIMIT: &str = "LIMIT";
const FORMAT: &str = "FORMAT";
const DRYRUN: &str = "DRYRUN";
const REWRITE: &str = "REWRITE";
const ALL: &str = "ALL";
const MATCH: &str = "MATCH";
const CHANGED: &str = "CHANGED";

/// The words that end FIX's run of bare ids.
const FIX_KEYWORDS: [&str; 8] = [ID, RULE, DRYRUN, REWRITE, THRESHOLD, FORMAT, ALL, CHANGED];

/// Parses the arguments of CONSISTENCY.CHECK.
pub fn parse_check(args: &[&[u8]]) -> Result<CheckArgs, ArgError> {
    let mut parsed = CheckArgs::default();
    let mut rules = Distinct::default();
    let mut ids = Distinct::default();
    let mut rest = Args::new(args);
    while let Some(arg) = rest.next() {
        if is(arg, RULE) {
            rules.push(rule_name(rest.value_of(RULE)?)?);
        } else if is(arg, ID) {
            ids.push(id(rest.value_of(ID)?)?);
        } else if is(arg, THRESHOLD) {
            once(parsed.threshold.is_some(), THRESHOLD)?;
            parsed.threshold = Some(threshold(rest.value_of(THRESHOLD)?)?);
        } else if is(arg, LIMIT) {
            once(parsed.limit.is_some(), LIMIT)?;
            parsed.limit = Some(limit(rest.value_of(LIMIT)?)?);
        } else if is(arg, FORMAT) {
            once(parsed.format.is_some(), FORMAT)?;
            parsed.format = Some(format(rest.value_of(FORMAT)?)?);
        } else if is(arg, CHANGED) {
            once(parsed.changed, CHANGED)?;
            parsed.changed = true;
        } else {
            return Err(ArgError::UnknownOption(display_arg(arg)));
        }
    }
    parsed.rules = rules.into_strings();
    parsed.ids = ids.items;
    if parsed.changed && !parsed.ids.is_empty() {
        return Err(ArgError::Conflict(CHANGED, ID));
    }
    Ok(parsed)
}

/// Parses the arguments of CONSISTENCY.FIX. Bare ids run up to the first
/// keyword; an id that equals a keyword is given as `ID <id>`. `ALL` counts
/// only as the first argument.
pub fn parse_fix(args: &[&[u8]]) -> Result<FixArgs, ArgError> {
    let all = args.first().is_some_and(|first| is(first, ALL));
    let mut rest = Args::new(args);
    let mut ids = Distinct::default();
    if all {
        rest.next();
    } else {
        while let Some(arg) = rest.peek() {
            if FIX_KEYWORDS.iter().any(|keyword| is(arg, keyword)) {
                break;
            }
            ids.push(id(arg)?);
            rest.next();
        }
    }

    let mut rules = Distinct::default();
    let mut threshold_given = None;
    let mut dry_run = false;
    let mut rewrite = false;
    let mut changed = false;
    let mut format_given = None;
    while let Some(arg) = rest.next() {
        if is(arg, ID) {
            if all {
                return Err(ArgError::Conflict(ALL, ID));
            }
            ids.push(id(rest.value_of(ID)?)?);
        } else if is(arg, RULE) {
            rules.push(rule_name(rest.value_of(RULE)?)?);
        } else if is(arg, DRYRUN) {
            dry_run = true;
        } else if is(arg, REWRITE) {
            rewrite = true;
        } else if is(arg, THRESHOLD) {
            if !all {
                return Err(ArgError::OnlyWithFixAll(THRESHOLD));
            }
            once(threshold_given.is_some(), THRESHOLD)?;
            threshold_given = Some(threshold(rest.value_of(THRESHOLD)?)?);
        } else if is(arg, FORMAT) {
            once(format_given.is_some(), FORMAT)?;
            format_given = Some(format(rest.value_of(FORMAT)?)?);
        } else if is(arg, CHANGED) {
            if !all {
                return Err(ArgError::OnlyWithFixAll(CHANGED));
            }
            once(changed, CHANGED)?;
            changed = true;
        } else if is(arg, ALL) {
            return Err(ArgError::AllNotFirst);
        } else if all {
            return Err(ArgError::UnknownOption(display_arg(arg)));
        } else {
            return Err(ArgError::UnknownFixOption(display_arg(arg)));
        }
    }

    let target = if all {
        FixTarget::All
    } else if ids.items.is_empty() {
        return Err(ArgError::NoFixTarget);
    } else {
        FixTarget::Ids(ids.items)
    };
    Ok(FixArgs {
        target,
        rules: rules.into_strings(),
        threshold: threshold_given,
        dry_run,
        rewrite,
        format: format_given,
        changed,
    })
}

/// Parses the arguments of CONSISTENCY.PURGE. Refuses an empty pattern and
/// one that matches every key: only `*`s, or `*`s with a single `?`.
pub fn parse_purge(args: &[&[u8]]) -> Result<PurgeArgs, ArgError> {
    let mut target = None;
    let mut dry_run = false;
    let mut limit_given = None;
    let mut rest = Args::new(args);
    while let Some(arg) = rest.next() {
        if is(arg, MATCH) {
            match target {
                Some(PurgeTarget::Rule(_)) => return Err(ArgError::Conflict(MATCH, RULE)),
                Some(PurgeTarget::Match(_)) => return Err(ArgError::GivenTwice(MATCH)),
                None => {}
            }
            let pattern = rest.value_of(MATCH)?;
            if pattern.is_empty() {
                return Err(ArgError::EmptyValue(MATCH));
            }
            if matches_every_key(pattern) {
                return Err(ArgError::PurgeEverything(display_arg(pattern)));
            }
            target = Some(PurgeTarget::Match(pattern.to_vec()));
        } else if is(arg, RULE) {
            match target {
                Some(PurgeTarget::Match(_)) => return Err(ArgError::Conflict(MATCH, RULE)),
                Some(PurgeTarget::Rule(_)) => return Err(ArgError::GivenTwice(RULE)),
                None => {}
            }
            target = Some(PurgeTarget::Rule(rule_name(rest.value_of(RULE)?)?));
        } else if is(arg, DRYRUN) {
            dry_run = true;
        } else if is(arg, LIMIT) {
            once(limit_given.is_some(), LIMIT)?;
            limit_given = Some(limit(rest.value_of(LIMIT)?)?);
        } else {
            return Err(ArgError::UnknownOption(display_arg(arg)));
        }
    }
    Ok(PurgeArgs {
        target: target.ok_or(ArgError::NoPurgeTarget)?,
        dry_run,
        limit: limit_given,
    })
}

/// Whether a Redis glob matches every key: only `*`s, or `*`s and a single
/// `?` (which any non-empty name satisfies).
fn matches_every_key(pattern: &[u8]) -> bool {
    let stars = pattern.iter().filter(|&&b| b == b'*').count();
    let questions = pattern.iter().filter(|&&b| b == b'?').count();
    stars + questions == pattern.len() && stars > 0 && questions <= 1
}

/// Whether `arg` is `keyword`, ignoring ASCII case.
fn is(arg: &[u8], keyword: &str) -> bool {
    arg.eq_ignore_ascii_case(keyword.as_bytes())
}

/// Refuses a single-valued option seen before.
fn once(seen: bool, option: &'static str) -> Result<(), ArgError> {
    if seen {
        Err(ArgError::GivenTwice(option))
    } else {
        Ok(())
    }
}

fn id(value: &[u8]) -> Result<Vec<u8>, ArgError> {
    if value.is_empty() {
        return Err(ArgError::EmptyValue(ID));
    }
    Ok(value.to_vec())
}

/// A rule name as text. Invalid UTF-8 is replaced lossily: rule names are
/// ASCII, so the result simply matches no rule and the caller says so.
fn rule_name(value: &[u8]) -> Result<String, ArgError> {
    if value.is_empty() {
        return Err(ArgError::EmptyValue(RULE));
    }
    Ok(String::from_utf8_lossy(value).into_owned())
}

/// A finite number >= 0; `-0` becomes `0`.
fn threshold(value: &[u8]) -> Result<f64, ArgError> {
    let parsed = std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse::<f64>().ok())
        .filter(|x| x.is_finite() && *x >= 0.0);
    parsed.map(|x| x + 0.0).ok_or_else(|| ArgError::NotANumber {
        option: THRESHOLD,
        got: display_arg(value),
    })
}

/// A plain decimal integer >= 0 (digits only: no sign, point or exponent).
fn limit(value: &[u8]) -> Result<usize, ArgError> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(ArgError::NotAnInteger {
            option: LIMIT,
            got: display_arg(value),
        });
    }
    // Digits only, so parsing can fail only by overflow.
    std::str::from_utf8(value)
        .ok()
        .and_then(|digits| digits.parse::<usize>().ok())
        .ok_or_else(|| ArgError::TooLarge {
            option: LIMIT,
            got: display_arg(value),
        })
}

fn format(value: &[u8]) -> Result<ReplyFormat, ArgError> {
    if is(value, "resp") {
        Ok(ReplyFormat::Resp)
    } else if is(value, "json") {
        Ok(ReplyFormat::Json)
    } else {
        Err(ArgError::BadFormat(display_arg(value)))
    }
}

/// A cursor over a command's arguments.
struct Args<'a> {
    args: &'a [&'a [u8]],
    position: usize,
}

impl<'a> Args<'a> {
    fn new(args: &'a [&'a [u8]]) -> Args<'a> {
        Args { args, position: 0 }
    }

    fn peek(&self) -> Option<&'a [u8]> {
        self.args.get(self.position).copied()
    }

    fn next(&mut self) -> Option<&'a [u8]> {
        let arg = self.peek()?;
        self.position += 1;
        Some(arg)
    }

    /// The value following `option`, which must be there.
    fn value_of(&mut self, option: &'static str) -> Result<&'a [u8], ArgError> {
        self.next().ok_or(ArgError::MissingValue(option))
    }
}

/// Values in first-seen order without repeats; the set keeps de-duplication
/// linear for FIX with thousands of ids.
#[derive(Default)]
struct Distinct {
    items: Vec<Vec<u8>>,
    seen: HashSet<Vec<u8>>,
}

impl Distinct {
    fn push(&mut self, item: impl Into<Vec<u8>>) {
        let item = item.into();
        if self.seen.insert(item.clone()) {
            self.items.push(item);
        }
    }

    fn into_strings(self) -> Vec<String> {
        self.items
            .into_iter()
            .map(|bytes| String::from_utf8(bytes).expect("only Strings are pushed as rule names"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits a command line on spaces (no quoting) into argument bytes.
    fn words(line: &str) -> Vec<&[u8]> {
        line.split_whitespace().map(str::as_bytes).collect()
    }

    fn check(line: &str) -> Result<CheckArgs, ArgError> {
        parse_check(&words(line))
    }

    fn fix(line: &str) -> Result<FixArgs, ArgError> {
        parse_fix(&words(line))
    }

    fn purge(line: &str) -> Result<PurgeArgs, ArgError> {
        parse_purge(&words(line))
    }

    fn ids(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|id| id.as_bytes().to_vec()).collect()
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn display_arg_is_escaped_and_short() {
        assert_eq!(display_arg(b"a\xffb"), "a\\xffb");
        assert_eq!(display_arg(b"a\r\nb"), "a\\x0d\\x0ab");
        assert_eq!(display_arg("ü".repeat(64).as_bytes()), "ü".repeat(64));
        let huge = vec![b'x'; 1 << 20];
        assert_eq!(
            display_arg(&huge),
            format!("{}...(1048576 bytes)", "x".repeat(64))
        );
    }

    #[test]
    fn check_defaults_to_everything() {
        assert_eq!(check(""), Ok(CheckArgs::default()));
    }

    #[test]
    fn check_parses_every_option_in_any_case() {
        assert_eq!(
            check("RULE cost_weekly id 4 Rule cost_5h ID 5 threshold 2.5 LiMiT 10 format JSON"),
            Ok(CheckArgs {
                rules: strings(&["cost_weekly", "cost_5h"]),
                ids: ids(&["4", "5"]),
                threshold: Some(2.5),
                limit: Some(10),
                format: Some(ReplyFormat::Json),
                changed: false,
            })
        );
        assert_eq!(
            check("FORMAT resp").unwrap().format,
            Some(ReplyFormat::Resp)
        );
    }

    #[test]
    fn changed_is_a_check_flag_and_a_fix_all_flag_only() {
        assert!(check("changed RULE a").unwrap().changed);
        assert!(!check("RULE a").unwrap().changed);
        assert_eq!(
            check("CHANGED ID 4").unwrap_err().to_string(),
            "CHANGED and ID cannot be combined"
        );
        assert_eq!(
            check("CHANGED CHANGED").unwrap_err().to_string(),
            "CHANGED given twice"
        );
        let words: Vec<&[u8]> = vec![b"ALL", b"CHANGED", b"DRYRUN"];
        let all = parse_fix(&words).unwrap();
        assert!(all.changed && all.dry_run);
        let words: Vec<&[u8]> = vec![b"4", b"CHANGED"];
        assert_eq!(
            parse_fix(&words).unwrap_err().to_string(),
            "CHANGED applies only to FIX ALL"
        );
    }

    #[test]
    fn check_values_are_taken_verbatim_even_when_they_look_like_keywords() {
        assert_eq!(
            check("RULE LIMIT ID RULE"),
            Ok(CheckArgs {
                rules: strings(&["LIMIT"]),
                ids: ids(&["RULE"]),
                ..CheckArgs::default()
            })
        );
    }

    #[test]
    fn check_deduplicates_keeping_first_order() {
        let parsed = check("ID 5 ID 4 ID 5 RULE b RULE a RULE b ID 4").unwrap();
        assert_eq!(parsed.ids, ids(&["5", "4"]));
        assert_eq!(parsed.rules, strings(&["b", "a"]));
        // Rule names are case-sensitive, so these are distinct.
        assert_eq!(check("RULE a RULE A").unwrap().rules, strings(&["a", "A"]));
    }

    #[test]
    fn check_keeps_binary_ids() {
        let args: [&[u8]; 4] = [b"ID", b"\x00\xff", b"ID", b"a b*?["];
        assert_eq!(
            parse_check(&args).unwrap().ids,
            vec![b"\x00\xff".to_vec(), b"a b*?[".to_vec()]
        );
    }

    #[test]
    fn thresholds() {
        let accepted = [
            ("0", 0.0),
            ("5", 5.0),
            ("2.5", 2.5),
            (".5", 0.5),
            ("5.", 5.0),
            ("1e3", 1000.0),
            ("+7", 7.0),
            ("-0", 0.0),
            ("1e308", 1e308),
        ];
        for (text, expected) in accepted {
            let got = check(&format!("THRESHOLD {text}"))
                .unwrap()
                .threshold
                .unwrap();
            assert_eq!(got, expected, "{text}");
            assert!(got.is_sign_positive(), "{text}");
        }
        let refused: [&[u8]; 12] = [
            b"abc",
            b"nan",
            b"NaN",
            b"inf",
            b"-inf",
            b"infinity",
            b"-0.1",
            b"-1",
            b"1e999",
            b"",
            b"5abc",
            b" 5",
        ];
        for text in refused {
            let args = [&b"THRESHOLD"[..], text];
            assert_eq!(
                parse_check(&args),
                Err(ArgError::NotANumber {
                    option: "THRESHOLD",
                    got: display_arg(text)
                }),
                "{text:?}"
            );
        }
        assert_eq!(
            check("THRESHOLD abc").unwrap_err().to_string(),
            "THRESHOLD must be a non-negative number, got 'abc'"
        );
        let args: [&[u8]; 2] = [b"THRESHOLD", b"\xff5"];
        assert_eq!(
            parse_check(&args).unwrap_err().to_string(),
            "THRESHOLD must be a non-negative number, got '\\xff5'"
        );
    }

    #[test]
    fn limits() {
        for (text, expected) in [
            ("0", 0),
            ("10", 10),
            ("007", 7),
            ("18446744073709551615", usize::MAX),
        ] {
            assert_eq!(
                check(&format!("LIMIT {text}")).unwrap().limit,
                Some(expected),
                "{text}"
            );
        }
        for text in ["-1", "1.5", "abc", "+5", "1e3", "5 ", "0x10", ""] {
            let args = [&b"LIMIT"[..], text.as_bytes()];
            assert_eq!(
                parse_check(&args).unwrap_err().to_string(),
                format!("LIMIT must be a non-negative integer, got '{text}'"),
                "{text:?}"
            );
        }
        assert_eq!(
            check("LIMIT 99999999999999999999999").unwrap_err(),
            ArgError::TooLarge {
                option: "LIMIT",
                got: "99999999999999999999999".into()
            }
        );
        assert_eq!(
            check("LIMIT 99999999999999999999999")
                .unwrap_err()
                .to_string(),
            format!(
                "LIMIT must be at most {}, got '99999999999999999999999'",
                usize::MAX
            )
        );
    }

    #[test]
    fn formats() {
        for (text, expected) in [
            ("resp", ReplyFormat::Resp),
            ("RESP", ReplyFormat::Resp),
            ("json", ReplyFormat::Json),
            ("Json", ReplyFormat::Json),
        ] {
            assert_eq!(
                check(&format!("FORMAT {text}")).unwrap().format,
                Some(expected)
            );
        }
        assert_eq!(
            check("FORMAT xml").unwrap_err().to_string(),
            "FORMAT must be resp or json, got 'xml'"
        );
        assert_eq!(ReplyFormat::Resp.name(), "resp");
        assert_eq!(ReplyFormat::Json.name(), "json");
    }

    #[test]
    fn check_errors() {
        let cases = [
            ("THRESHOLD", "THRESHOLD needs a value"),
            ("LIMIT", "LIMIT needs a value"),
            ("FORMAT", "FORMAT needs a value"),
            ("RULE", "RULE needs a value"),
            ("ID 4 ID", "ID needs a value"),
            ("FOO", "unknown option 'FOO'"),
            ("4", "unknown option '4'"),
            ("DRYRUN", "unknown option 'DRYRUN'"),
            ("MATCH x", "unknown option 'MATCH'"),
            ("THRESHOLD 1 THRESHOLD 2", "THRESHOLD given twice"),
            ("threshold 1 THRESHOLD", "THRESHOLD given twice"),
            ("LIMIT 1 LIMIT 1", "LIMIT given twice"),
            ("FORMAT json FORMAT resp", "FORMAT given twice"),
        ];
        for (line, expected) in cases {
            assert_eq!(check(line).unwrap_err().to_string(), expected, "{line}");
        }
        let empty_id: [&[u8]; 2] = [b"ID", b""];
        assert_eq!(
            parse_check(&empty_id).unwrap_err().to_string(),
            "ID must not be empty"
        );
        let empty_rule: [&[u8]; 2] = [b"RULE", b""];
        assert_eq!(
            parse_check(&empty_rule).unwrap_err().to_string(),
            "RULE must not be empty"
        );
        let binary: [&[u8]; 1] = [b"\xffOPT"];
        assert_eq!(
            parse_check(&binary).unwrap_err().to_string(),
            "unknown option '\\xffOPT'"
        );
    }

    #[test]
    fn check_reports_the_first_error_in_order() {
        assert_eq!(
            check("FOO THRESHOLD abc").unwrap_err().to_string(),
            "unknown option 'FOO'"
        );
        assert_eq!(
            check("THRESHOLD abc FOO").unwrap_err().to_string(),
            "THRESHOLD must be a non-negative number, got 'abc'"
        );
    }

    #[test]
    fn rule_names_that_are_not_utf8_become_lossy() {
        let args: [&[u8]; 2] = [b"RULE", b"a\xff"];
        assert_eq!(parse_check(&args).unwrap().rules, strings(&["a\u{fffd}"]));
    }

    #[test]
    fn fix_bare_ids() {
        assert_eq!(
            fix("4"),
            Ok(FixArgs {
                target: FixTarget::Ids(ids(&["4"])),
                rules: vec![],
                threshold: None,
                dry_run: false,
                rewrite: false,
                format: None,
                changed: false,
            })
        );
        assert_eq!(
            fix("4 5 6 rule cost_weekly dryrun REWRITE id rule ID 7 FORMAT json"),
            Ok(FixArgs {
                target: FixTarget::Ids(ids(&["4", "5", "6", "rule", "7"])),
                rules: strings(&["cost_weekly"]),
                threshold: None,
                dry_run: true,
                rewrite: true,
                format: Some(ReplyFormat::Json),
                changed: false,
            })
        );
    }

    #[test]
    fn fix_ids_given_only_with_id() {
        assert_eq!(
            fix("ID ALL ID dryrun").unwrap().target,
            FixTarget::Ids(ids(&["ALL", "dryrun"]))
        );
    }

    #[test]
    fn fix_deduplicates_ids_and_rules() {
        let parsed = fix("5 4 5 ID 4 ID 6 RULE a RULE a").unwrap();
        assert_eq!(parsed.target, FixTarget::Ids(ids(&["5", "4", "6"])));
        assert_eq!(parsed.rules, strings(&["a"]));
    }

    #[test]
    fn fix_flags_may_repeat() {
        let parsed = fix("4 DRYRUN dryrun REWRITE rewrite").unwrap();
        assert!(parsed.dry_run);
        assert!(parsed.rewrite);
    }

    #[test]
    fn fix_keeps_ids_that_look_like_other_commands_options() {
        // LIMIT and MATCH are not FIX keywords, so they are ids here.
        assert_eq!(
            fix("LIMIT 5 MATCH *").unwrap().target,
            FixTarget::Ids(ids(&["LIMIT", "5", "MATCH", "*"]))
        );
    }

    #[test]
    fn fix_keeps_binary_ids() {
        let args: [&[u8]; 3] = [b"\x00\xff", b"ID", b"x\r\ny"];
        assert_eq!(
            parse_fix(&args).unwrap().target,
            FixTarget::Ids(vec![b"\x00\xff".to_vec(), b"x\r\ny".to_vec()])
        );
    }

    #[test]
    fn fix_all() {
        assert_eq!(
            fix("all"),
            Ok(FixArgs {
                target: FixTarget::All,
                rules: vec![],
                threshold: None,
                dry_run: false,
                rewrite: false,
                format: None,
                changed: false,
            })
        );
        assert_eq!(
            fix("ALL RULE a RULE b THRESHOLD 0.5 DRYRUN REWRITE FORMAT resp"),
            Ok(FixArgs {
                target: FixTarget::All,
                rules: strings(&["a", "b"]),
                threshold: Some(0.5),
                dry_run: true,
                rewrite: true,
                format: Some(ReplyFormat::Resp),
                changed: false,
            })
        );
    }

    #[test]
    fn fix_errors() {
        let cases = [
            ("", "FIX needs at least one id or ALL"),
            ("DRYRUN", "FIX needs at least one id or ALL"),
            ("RULE cost_weekly REWRITE", "FIX needs at least one id or ALL"),
            ("ID", "ID needs a value"),
            ("4 RULE", "RULE needs a value"),
            ("ALL THRESHOLD", "THRESHOLD needs a value"),
            ("4 FORMAT", "FORMAT needs a value"),
            ("4 THRESHOLD 5", "THRESHOLD applies only to FIX ALL"),
            ("ID 4 threshold abc", "THRESHOLD applies only to FIX ALL"),
            ("ALL THRESHOLD 1 THRESHOLD 2", "THRESHOLD given twice"),
            ("ALL THRESHOLD -1", "THRESHOLD must be a non-negative number, got '-1'"),
            ("4 FORMAT json FORMAT json", "FORMAT given twice"),
            ("4 FORMAT xml", "FORMAT must be resp or json, got 'xml'"),
            (
                "4 ALL",
                "ALL must be the first argument; to fix an id named ALL, give ID ALL",
            ),
            (
                "ALL ALL",
                "ALL must be the first argument; to fix an id named ALL, give ID ALL",
            ),
            ("ALL ID 4", "ALL and ID cannot be combined"),
            ("ALL 4", "unknown option '4'"),
            ("ALL LIMIT 5", "unknown option 'LIMIT'"),
            (
                "4 DRYRUN 5",
                "unknown option '5' (bare ids go before the first option; give later ids as ID <id>)",
            ),
            (
                "4 DRYRUN REWRIT",
                "unknown option 'REWRIT' (bare ids go before the first option; give later ids as ID <id>)",
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(fix(line).unwrap_err().to_string(), expected, "{line}");
        }
        for args in [vec![&b""[..]], vec![&b"4"[..], b""], vec![&b"ID"[..], b""]] {
            assert_eq!(
                parse_fix(&args).unwrap_err().to_string(),
                "ID must not be empty",
                "{args:?}"
            );
        }
    }

    #[test]
    fn purge_targets() {
        assert_eq!(
            purge("MATCH user:*:cost*"),
            Ok(PurgeArgs {
                target: PurgeTarget::Match(b"user:*:cost*".to_vec()),
                dry_run: false,
                limit: None,
            })
        );
        assert_eq!(
            purge("dryrun rule cost_weekly limit 100 DRYRUN"),
            Ok(PurgeArgs {
                target: PurgeTarget::Rule("cost_weekly".into()),
                dry_run: true,
                limit: Some(100),
            })
        );
        for pattern in ["?", "??", "a*", "*a", "\\*", "[*]", "*?*?", "x"] {
            assert_eq!(
                purge(&format!("MATCH {pattern}")).unwrap().target,
                PurgeTarget::Match(pattern.as_bytes().to_vec()),
                "{pattern}"
            );
        }
        // The pattern is a value, so a keyword there is a pattern.
        assert_eq!(
            purge("MATCH RULE").unwrap().target,
            PurgeTarget::Match(b"RULE".to_vec())
        );
    }

    #[test]
    fn purge_refuses_patterns_that_match_every_key() {
        for pattern in ["*", "**", "*****", "?*", "*?", "*?*"] {
            assert_eq!(
                purge(&format!("MATCH {pattern}")).unwrap_err().to_string(),
                format!("MATCH pattern '{pattern}' would purge every key; name a narrower pattern"),
                "{pattern}"
            );
        }
        let empty: [&[u8]; 2] = [b"MATCH", b""];
        assert_eq!(
            parse_purge(&empty).unwrap_err().to_string(),
            "MATCH must not be empty"
        );
    }

    #[test]
    fn purge_errors() {
        let cases = [
            ("", "PURGE needs MATCH pattern or RULE name"),
            ("DRYRUN LIMIT 5", "PURGE needs MATCH pattern or RULE name"),
            ("MATCH", "MATCH needs a value"),
            ("RULE", "RULE needs a value"),
            ("MATCH a* LIMIT", "LIMIT needs a value"),
            ("MATCH a* RULE r", "MATCH and RULE cannot be combined"),
            ("RULE r MATCH a*", "MATCH and RULE cannot be combined"),
            ("MATCH a* MATCH b*", "MATCH given twice"),
            ("RULE r RULE s", "RULE given twice"),
            ("MATCH a* LIMIT 1 LIMIT 2", "LIMIT given twice"),
            (
                "MATCH a* LIMIT -1",
                "LIMIT must be a non-negative integer, got '-1'",
            ),
            ("MATCH a* FORMAT json", "unknown option 'FORMAT'"),
            ("MATCH a* REWRITE", "unknown option 'REWRITE'"),
            ("a*", "unknown option 'a*'"),
        ];
        for (line, expected) in cases {
            assert_eq!(purge(line).unwrap_err().to_string(), expected, "{line}");
        }
        let empty_rule: [&[u8]; 2] = [b"RULE", b""];
        assert_eq!(
            parse_purge(&empty_rule).unwrap_err().to_string(),
            "RULE must not be empty"
        );
    }

    #[test]
    fn purge_shows_long_patterns_shortened() {
        let pattern = "*".repeat(200);
        assert_eq!(
            purge(&format!("MATCH {pattern}")).unwrap_err().to_string(),
            format!(
                "MATCH pattern '{}...(200 bytes)' would purge every key; name a narrower pattern",
                "*".repeat(64)
            )
        );
    }

    #[test]
    fn every_error_message() {
        let cases = [
            (
                ArgError::MissingValue("THRESHOLD"),
                "THRESHOLD needs a value",
            ),
            (ArgError::EmptyValue("ID"), "ID must not be empty"),
            (ArgError::GivenTwice("LIMIT"), "LIMIT given twice"),
            (
                ArgError::Conflict("MATCH", "RULE"),
                "MATCH and RULE cannot be combined",
            ),
            (
                ArgError::OnlyWithFixAll("THRESHOLD"),
                "THRESHOLD applies only to FIX ALL",
            ),
            (ArgError::NoFixTarget, "FIX needs at least one id or ALL"),
            (
                ArgError::NoPurgeTarget,
                "PURGE needs MATCH pattern or RULE name",
            ),
            (
                ArgError::UnknownOption("FOO".into()),
                "unknown option 'FOO'",
            ),
            (
                ArgError::BadFormat("xml".into()),
                "FORMAT must be resp or json, got 'xml'",
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(error.to_string(), expected);
        }
    }
}
