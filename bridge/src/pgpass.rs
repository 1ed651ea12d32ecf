//! libpq's password file (`~/.pgpass`, `PGPASSFILE`, `passfile=`): used when
//! nothing else gives a password.
//!
//! Lines are `host:port:database:user:password`; `*` matches anything in the
//! first four fields, `\:` and `\\` escape, lines starting with `#` are
//! comments, and the first matching line wins. A file that the group or
//! others may read is ignored, as libpq ignores it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What a connection is matched by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target<'a> {
    pub host: &'a str,
    pub port: &'a str,
    pub dbname: &'a str,
    pub user: &'a str,
}

/// libpq's compiled-in socket directory on Debian (and upstream's): a
/// connection through it is matched as `localhost`.
const DEFAULT_SOCKET_DIRS: [&str; 2] = ["/var/run/postgresql", "/tmp"];

/// The host field a connection is matched by: the host, `localhost` for
/// the default socket directory or when no host is given.
pub(crate) fn match_host(host: Option<&str>) -> &str {
    match host {
        None | Some("") => "localhost",
        Some(h) if DEFAULT_SOCKET_DIRS.contains(&h.trim_end_matches('/')) => "localhost",
        Some(h) => h,
    }
}

/// Which file to read: `passfile` from pg-url, else `$PGPASSFILE`, else
/// `$HOME/.pgpass`.
pub(crate) fn file_path(
    passfile: Option<&str>,
    env_passfile: Option<&str>,
    home: Option<&Path>,
) -> Option<PathBuf> {
    passfile
        .or(env_passfile)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| home.map(|h| h.join(".pgpass")))
}

/// The outcome of a look-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// A line matched.
    Found(String),
    /// No file, or no line matched.
    NotFound,
    /// The file is there but was ignored; the reason names no password.
    Ignored(String),
}

/// Looks `target` up in the file at `path`.
pub(crate) fn lookup(path: &Path, target: &Target<'_>) -> Lookup {
    let Ok(meta) = fs::metadata(path) else {
        return Lookup::NotFound;
    };
    if !meta.is_file() {
        return Lookup::Ignored(format!("{} is not a plain file", path.display()));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Lookup::Ignored(format!(
            "{} has group or world access; permissions should be u=rw (0600) or less",
            path.display()
        ));
    }
    match fs::read(path) {
        Ok(bytes) => match find(&String::from_utf8_lossy(&bytes), target) {
            Some(password) => Lookup::Found(password),
            None => Lookup::NotFound,
        },
        Err(e) => Lookup::Ignored(format!(
            "{} cannot be read: {}",
            path.display(),
            crate::error::io_reason(&e)
        )),
    }
}

/// The password of the first line of `text` matching `target`.
pub(crate) fn find(text: &str, target: &Target<'_>) -> Option<String> {
    text.lines()
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .find_map(|line| {
            let rest = field_matches(line, target.host)?;
            let rest = field_matches(rest, target.port)?;
            let rest = field_matches(rest, target.dbname)?;
            let rest = field_matches(rest, target.user)?;
            Some(unescape_password(rest))
        })
}

/// When the field at the start of `line` is `*` or equals `want` (with `\`
/// escapes), the text after its `:`.
fn field_matches<'a>(line: &'a str, want: &str) -> Option<&'a str> {
    if let Some(rest) = line.strip_prefix("*:") {
        return Some(rest);
    }
    let mut want = want.chars();
    let mut chars = line.char_indices();
    while let Some((i, c)) = chars.next() {
        let (c, escaped) = if c == '\\' {
            match chars.next() {
                Some((_, next)) => (next, true),
                None => return None,
            }
        } else {
            (c, false)
        };
        if c == ':' && !escaped {
            return want.next().is_none().then(|| &line[i + 1..]);
        }
        if want.next() != Some(c) {
            return None;
        }
    }
    // The line ended inside this field: no password follows.
    None
}

/// The password field: up to an unescaped `:` or the end, escapes removed.
fn unescape_password(field: &str) -> String {
    let mut out = String::new();
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        match c {
            ':' => break,
            '\\' => match chars.next() {
                Some(next) => out.push(next),
                None => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Target<'static> = Target {
        host: "db.internal",
        port: "5432",
        dbname: "app",
        user: "checker",
    };

    #[test]
    fn first_matching_line_wins() {
        let text = "\
# a comment line, then lines for other hosts, users and ports
other:5432:app:checker:nope1
db.internal:5433:app:checker:nope2
db.internal:5432:app:someone:nope3
db.internal:5432:app:checker:right
*:*:*:*:too-late
";
        assert_eq!(find(text, &T).as_deref(), Some("right"));
    }

    #[test]
    fn stars_match_anything() {
        assert_eq!(find("*:*:*:*:any", &T).as_deref(), Some("any"));
        assert_eq!(find("db.internal:*:*:checker:p", &T).as_deref(), Some("p"));
        // A star inside a field is literal.
        assert_eq!(find("db.*:5432:app:checker:p", &T), None);
    }

    #[test]
    fn escapes_in_fields_and_password() {
        let t = Target {
            host: "h",
            port: "5432",
            dbname: "a:b",
            user: r"c\d",
        };
        let text = r"h:5432:a\:b:c\\d:pa\:ss\\w:rd";
        // The password ends at the next unescaped ':'.
        assert_eq!(find(text, &t).as_deref(), Some(r"pa:ss\w"));
        assert_eq!(find(r"h:5432:a:b:c\\d:p", &t), None);
    }

    #[test]
    fn short_and_odd_lines_never_match() {
        for text in [
            "db.internal:5432:app:checker",
            "db.internal:5432",
            "",
            "#*:*:*:*:x",
        ] {
            assert_eq!(find(text, &T), None, "{text:?}");
        }
        // CRLF line ends, and an empty password.
        assert_eq!(find("*:*:*:*:p\r\n", &T).as_deref(), Some("p"));
        assert_eq!(find("*:*:*:*:", &T).as_deref(), Some(""));
    }

    #[test]
    fn host_for_matching() {
        assert_eq!(match_host(None), "localhost");
        assert_eq!(match_host(Some("/var/run/postgresql")), "localhost");
        assert_eq!(match_host(Some("/tmp/")), "localhost");
        assert_eq!(match_host(Some("/srv/pg")), "/srv/pg");
        assert_eq!(match_host(Some("10.0.0.5")), "10.0.0.5");
    }

    #[test]
    fn which_file() {
        let home = Path::new("/home/r");
        assert_eq!(
            file_path(Some("/a"), Some("/b"), Some(home)),
            Some(PathBuf::from("/a"))
        );
        assert_eq!(
            file_path(None, Some("/b"), Some(home)),
            Some(PathBuf::from("/b"))
        );
        assert_eq!(
            file_path(None, None, Some(home)),
            Some(PathBuf::from("/home/r/.pgpass"))
        );
        assert_eq!(file_path(None, Some(""), None), None);
    }

    #[test]
    fn open_files_are_ignored() {
        let dir = std::env::temp_dir().join(format!("bridge-pgpass-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pgpass");
        fs::write(&path, "*:*:*:*:pw\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(lookup(&path, &T), Lookup::Found("pw".into()));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let Lookup::Ignored(why) = lookup(&path, &T) else {
            panic!("a group-readable file was used");
        };
        assert!(why.contains("group or world access"), "{why}");
        assert!(!why.contains("pw\n"), "{why}");
        assert_eq!(lookup(&dir.join("absent"), &T), Lookup::NotFound);
        fs::remove_dir_all(&dir).unwrap();
    }
}
