//! JSON read in document order: objects keep their fields in order and keep
//! repeated fields (serde_json's `Value` silently keeps the last one), so the
//! rules file's validation can name unknown fields in order and refuse repeats,
//! and tests can compare reply field order.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON value that keeps object fields in document order and keeps
/// repeated fields, so validation can name unknown fields in order and
/// refuse repeats (serde_json's `Value` silently keeps the last one).
#[derive(Debug)]
pub enum JsonNode {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<JsonNode>),
    Object(Vec<(String, JsonNode)>),
}

impl<'de> Deserialize<'de> for JsonNode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<JsonNode, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = JsonNode;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<JsonNode, E> {
        Ok(JsonNode::Null)
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<JsonNode, E> {
        Ok(JsonNode::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<JsonNode, E> {
        Ok(JsonNode::Number(n.into()))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<JsonNode, E> {
        Ok(JsonNode::Number(n.into()))
    }

    fn visit_f64<E: de::Error>(self, x: f64) -> Result<JsonNode, E> {
        serde_json::Number::from_f64(x)
            .map(JsonNode::Number)
            .ok_or_else(|| E::custom(format!("number {x} is not finite")))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<JsonNode, E> {
        Ok(JsonNode::String(s.to_string()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<JsonNode, E> {
        Ok(JsonNode::String(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JsonNode, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(JsonNode::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonNode, A::Error> {
        let mut fields = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, JsonNode>()? {
            fields.push((key, value));
        }
        Ok(JsonNode::Object(fields))
    }
}
