//! Whether two key templates can match the same key, and an example of one.
//!
//! Each template is a tiny regular language: literal bytes, and placeholders of
//! one or more bytes (maybe all but `:`). A breadth-first walk over pairs of
//! positions in both templates finds the shortest key both accept, or proves
//! there is none. Pure code; templates are short, so the walk is tiny.

use std::collections::VecDeque;

use crate::template::Atom;

/// Bytes tried first for a placeholder, so examples read well (`u:1:w`).
const PREFERRED: &[u8] = b"1xayz_0";

/// A step from one position of a template to the next: the bytes it takes.
#[derive(Clone, Copy)]
enum Step {
    Byte(u8),
    Any,
    AnyBut(u8),
}

impl Step {
    fn takes(self, b: u8) -> bool {
        match self {
            Step::Byte(x) => b == x,
            Step::Any => true,
            Step::AnyBut(x) => b != x,
        }
    }
}

/// The steps out of position `i` (before atom `i`), with where each leads.
/// A placeholder is one step of its class into the next position, plus a loop
/// on that next position for its further bytes.
fn steps(atoms: &[Atom], i: usize) -> Vec<(Step, usize)> {
    let class = |atom: Atom| match atom {
        Atom::Byte(b) => Step::Byte(b),
        Atom::AnyBytes => Step::Any,
        Atom::AnyBut(b) => Step::AnyBut(b),
    };
    let mut out = Vec::with_capacity(2);
    if let Some(&atom) = atoms.get(i) {
        out.push((class(atom), i + 1));
    }
    if i > 0 && !matches!(atoms[i - 1], Atom::Byte(_)) {
        out.push((class(atoms[i - 1]), i));
    }
    out
}

/// A byte both steps take, preferring readable ones.
fn common_byte(a: Step, b: Step) -> Option<u8> {
    if let Step::Byte(x) = a {
        return b.takes(x).then_some(x);
    }
    if let Step::Byte(y) = b {
        return a.takes(y).then_some(y);
    }
    PREFERRED
        .iter()
        .copied()
        .chain(0x21..0x7f)
        .chain(0..=255)
        .find(|&c| a.takes(c) && b.takes(c))
}

/// The shortest key matched by both templates, or None when none is.
pub fn common_key(a: &[Atom], b: &[Atom]) -> Option<Vec<u8>> {
    let width = b.len() + 1;
    let index = |i: usize, j: usize| i * width + j;
    // For each reached pair: the pair it came from and the byte taken.
    let mut came_from: Vec<Option<(usize, u8)>> = vec![None; (a.len() + 1) * width];
    let mut seen = vec![false; (a.len() + 1) * width];
    let mut queue = VecDeque::from([(0usize, 0usize)]);
    seen[0] = true;
    while let Some((i, j)) = queue.pop_front() {
        if i == a.len() && j == b.len() {
            let mut key = Vec::new();
            let mut at = index(i, j);
            while let Some((from, byte)) = came_from[at] {
                key.push(byte);
                at = from;
            }
            key.reverse();
            return Some(key);
        }
        for (step_a, next_i) in steps(a, i) {
            for (step_b, next_j) in steps(b, j) {
                let Some(byte) = common_byte(step_a, step_b) else {
                    continue;
                };
                let next = index(next_i, next_j);
                if !seen[next] {
                    seen[next] = true;
                    came_from[next] = Some((index(i, j), byte));
                    queue.push_back((next_i, next_j));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use crate::template::KeyTemplate;

    fn t(source: &str) -> KeyTemplate {
        KeyTemplate::parse(source).unwrap()
    }

    fn overlap(a: &KeyTemplate, b: &KeyTemplate) -> Option<String> {
        let key = a.overlap(b)?;
        // The example must really be matched by both.
        assert!(a.id_of(&key).is_some(), "{key:?} vs {}", a.source());
        assert!(b.id_of(&key).is_some(), "{key:?} vs {}", b.source());
        assert!(b.overlap(a).is_some(), "overlap is symmetric");
        Some(String::from_utf8_lossy(&key).into_owned())
    }

    #[test]
    fn separate_families_do_not_overlap() {
        assert_eq!(overlap(&t("u:{id}"), &t("u:{id}:w")), None);
        assert_eq!(
            overlap(&t("user:{id}:cost_weekly"), &t("user:{id}:cost_monthly")),
            None
        );
        assert_eq!(
            overlap(&t("mcp:connection:state:{id}"), &t("user:{id}:cost_weekly")),
            None
        );
        assert_eq!(overlap(&t("a{id}"), &t("b{id}")), None);
    }

    #[test]
    fn colons_in_ids_make_families_overlap() {
        let wide = t("u:{id}").allowing_colon_in_id();
        assert_eq!(overlap(&wide, &t("u:{id}:w")).as_deref(), Some("u:1:w"));
        // A prefix and a suffix can meet in one short key.
        assert_eq!(overlap(&t("{id}:w"), &t("u:{id}")).as_deref(), Some("u:w"));
    }

    #[test]
    fn same_shape_overlaps_and_examples_match_both() {
        assert_eq!(overlap(&t("u:{id}"), &t("u:{id}")).as_deref(), Some("u:1"));
        assert_eq!(overlap(&t("{id}:x"), &t("a{id}")), None);
        assert_eq!(
            overlap(&t("{id}:x"), &t("a{id}").allowing_colon_in_id()).as_deref(),
            Some("a:x")
        );
        assert!(overlap(&t("k{id}k"), &t("kk{id}")).is_some());
        assert_eq!(overlap(&t("x:{id}:a"), &t("{id}:y")), None);
        assert_eq!(
            overlap(
                &t("x:{id}:a").allowing_colon_in_id(),
                &t("{id}:a").allowing_colon_in_id()
            )
            .as_deref(),
            Some("x:1:a")
        );
    }
}
