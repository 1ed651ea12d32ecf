//! One rule's truth, ready for lookups: rows keyed by what names a key (the
//! id for a template with `{id}` alone, the key name itself for a template
//! with more placeholders, built from the row's `id` and placeholder
//! columns), each holding the value or, for json rules, the fields. Pure
//! code; no Redis types.

use std::collections::hash_map::Entry;
use std::sync::Arc;

use consistency_bridge::TruthRow;

use crate::compare::Truth;
use crate::fast_hash::FastMap;
use crate::reply::bytes_as_text;
use crate::rules::{Rule, RuleKind};

/// What one truth row holds.
#[derive(Clone, Debug, PartialEq)]
pub enum TruthValue {
    /// The value (None: SQL NULL, or a presence row).
    Value(Option<String>),
    /// json: the fields, in [`TruthMap::field_names`] order.
    Fields(Box<[Option<String>]>),
}

/// The truth of one rule.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TruthMap {
    rows: FastMap<Vec<u8>, TruthValue>,
    /// json rules: the field names.
    fields: Vec<Arc<str>>,
}

impl TruthMap {
    /// The truth for `slot` (an id, or a key name for templates with several
    /// placeholders: see [`slot_of`]).
    pub fn lookup(&self, slot: &[u8]) -> Truth<'_> {
        match self.rows.get(slot) {
            None => Truth::Unknown,
            Some(value) => self.as_truth(value),
        }
    }

    fn as_truth<'t>(&'t self, value: &'t TruthValue) -> Truth<'t> {
        match value {
            TruthValue::Value(v) => Truth::Known(v.as_deref()),
            TruthValue::Fields(values) => Truth::Document {
                names: &self.fields,
                values,
            },
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn contains(&self, slot: &[u8]) -> bool {
        self.rows.contains_key(slot)
    }

    /// Keeps the rows whose slot passes `keep`.
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8]) -> bool) {
        self.rows.retain(|slot, _| keep(slot));
    }

    /// Every row: its slot and its truth.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Truth<'_>)> {
        self.rows
            .iter()
            .map(|(slot, value)| (slot.as_slice(), self.as_truth(value)))
    }

    /// The json field names.
    pub fn field_names(&self) -> &[Arc<str>] {
        &self.fields
    }
}

/// What names a key in a rule's truth and cache maps: the id when the
/// template has `{id}` alone (so ids look up without building key names), the
/// key name when it has more placeholders (one id has many keys then).
pub fn slot_of<'k>(rule: &Rule, id: &'k [u8], key: &'k [u8]) -> &'k [u8] {
    if rule.key.is_multi() {
        key
    } else {
        id
    }
}

/// The key a slot names, and its id.
pub fn key_of_slot(rule: &Rule, slot: &[u8]) -> (Vec<u8>, Vec<u8>) {
    if rule.key.is_multi() {
        let id = rule.key.id_of(slot).unwrap_or_default().to_vec();
        (slot.to_vec(), id)
    } else {
        (rule.key.key_for(slot), slot.to_vec())
    }
}

/// A valued rule's truth returned one id (one key, with several placeholders)
/// twice: which row is the truth would depend on row order, so the rule is in
/// error rather than either row taken.
#[derive(Debug, Clone, PartialEq)]
pub struct DuplicateId {
    pub rule: String,
    pub id: String,
    /// With several placeholders: the key both rows name.
    pub key: Option<String>,
}

impl std::fmt::Display for DuplicateId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "truth of rule '{}' returned id '{}'", self.rule, self.id)?;
        if let Some(key) = &self.key {
            write!(f, " for key '{key}'")?;
        }
        f.write_str(" twice")
    }
}

/// The truth rows of `rule` by slot. A presence rule's rows carry no value, so
/// a repeated id there changes no verdict (a truth listing sessions may repeat
/// a user) and is taken once. With several placeholders, a row whose parts are
/// NULL or could not come back out of a key name (a `:` in a part) names no
/// key and is left out.
pub fn to_map(rows: Vec<TruthRow>, rule: &Rule) -> Result<TruthMap, DuplicateId> {
    let valued = rule.kind != RuleKind::Presence;
    let json = rule.kind == RuleKind::Json;
    let multi = rule.key.is_multi();
    let mut map = TruthMap::default();
    map.rows.reserve(rows.len());
    // Where each placeholder's and the value's columns are among the named ones.
    let names: Vec<Arc<str>> = rows
        .first()
        .map(|r| r.named.iter().map(|(n, _)| Arc::clone(n)).collect())
        .unwrap_or_default();
    let column = |name: &str| names.iter().position(|n| &**n == name);
    let part_columns: Vec<Option<usize>> = rule
        .key
        .names()
        .iter()
        .map(|n| if n == "id" { None } else { column(n) })
        .collect();
    let placeholder = |n: &str| rule.key.names().iter().any(|p| p == n);
    let field_columns: Vec<usize> = (0..names.len())
        .filter(|&i| json && !placeholder(&names[i]))
        .collect();
    map.fields = field_columns
        .iter()
        .map(|&i| Arc::clone(&names[i]))
        .collect();
    let value_column = (!json && !names.is_empty())
        .then(|| column("value"))
        .flatten();
    for row in rows {
        let slot = if multi {
            let mut parts: Vec<&[u8]> = Vec::with_capacity(part_columns.len());
            for at in &part_columns {
                match at {
                    None => parts.push(row.id.as_bytes()),
                    Some(i) => match row.named.get(*i).and_then(|(_, v)| v.as_deref()) {
                        Some(part) => parts.push(part.as_bytes()),
                        None => break,
                    },
                }
            }
            if parts.len() != part_columns.len() {
                continue;
            }
            let key = rule.key.key_from(&parts);
            if rule.key.parts_of(&key).as_deref() != Some(parts.as_slice()) {
                continue;
            }
            key
        } else {
            row.id.as_bytes().to_vec()
        };
        let value = if json {
            TruthValue::Fields(
                field_columns
                    .iter()
                    .map(|&i| row.named.get(i).and_then(|(_, v)| v.clone()))
                    .collect(),
            )
        } else if let Some(i) = value_column {
            TruthValue::Value(row.named.get(i).and_then(|(_, v)| v.clone()))
        } else {
            TruthValue::Value(row.value)
        };
        match map.rows.entry(slot) {
            Entry::Vacant(place) => {
                place.insert(value);
            }
            Entry::Occupied(place) if valued => {
                return Err(DuplicateId {
                    rule: rule.name.clone(),
                    id: row.id,
                    key: multi.then(|| bytes_as_text(place.key())),
                })
            }
            Entry::Occupied(_) => {}
        }
    }
    Ok(map)
}
