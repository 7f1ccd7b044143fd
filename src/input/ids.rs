//! Row ids: the one place that says which id a row's record carries, so that `run` names
//! records and `export` finds them by the same rules.

use serde_json::{Map, Value};

/// What a row's id field holds, as [`row_id`] reads it: an id, none, or why it is unusable.
pub type OwnId = Result<Option<String>, String>;

/// The id a row gives itself, if any: the `id_field`, or `custom_id` (OpenAI Batch lines).
pub fn row_id(fields: &Map<String, Value>, id_field: &str) -> OwnId {
    let value = fields
        .get(id_field)
        .filter(|v| !v.is_null())
        .or_else(|| fields.get("custom_id").filter(|v| !v.is_null()));
    match value {
        None => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Err(format!("empty `{id_field}`")),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(format!("`{id_field}` must be a string or a number")),
    }
}

/// The id of a row's record: the one piece of code by which `run` names records and `export`
/// finds them. It is the row's own id (`own`), or its row number when no row of the input has
/// an id (`own_ids` false); `line:N` for a row whose id is unusable, or missing while other
/// rows have one; `ID#line:N` for a later row of a duplicate id (`duplicate`), valid or not.
pub fn record_id(line: u64, number: u64, own: &OwnId, own_ids: bool, duplicate: bool) -> String {
    match own {
        Err(_) => format!("line:{line}"),
        Ok(Some(id)) if duplicate => format!("{id}#line:{line}"),
        Ok(Some(id)) => id.clone(),
        Ok(None) if own_ids => format!("line:{line}"),
        Ok(None) => number.to_string(),
    }
}

/// A 128-bit hash of an id: what the resume set and export's join keep instead of the id
/// itself, so that memory stays small on million-row jobs.
pub fn id_key(id: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(id.as_bytes())
}

/// `--shard K/N`: this process sends the rows whose id hashes to `index` modulo `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// K, in [0, N).
    pub index: u64,
    /// N, at least 1.
    pub count: u64,
}

impl Shard {
    /// Whether the record id whose [`id_key`] is `key` belongs to this shard. The hash of the
    /// id alone decides: neither the row's place in the input nor the other rows move a row
    /// from one shard to another, so a reordered input resumes in the same shards.
    pub fn owns(self, key: u128) -> bool {
        shard_of(key, self.count) == self.index
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The shard, among `count`, of the record id whose [`id_key`] is `key`.
pub fn shard_of(key: u128, count: u64) -> u64 {
    (key % u128::from(count.max(1))) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINNED_SHARDS_OF_7: [u64; 4] = [2, 5, 6, 2];

    #[test]
    fn shards_are_stable_and_cover_every_id_once() {
        // Pinned: a change of hash would move done rows to other shards on a rerun.
        let pinned: Vec<u64> = ["r1", "r2", "r3", "42"]
            .iter()
            .map(|id| shard_of(id_key(id), 7))
            .collect();
        assert_eq!(pinned, PINNED_SHARDS_OF_7);
        for id in ["a", "b", "c", "line:3"] {
            let owners = (0..5)
                .filter(|&k| Shard { index: k, count: 5 }.owns(id_key(id)))
                .count();
            assert_eq!(owners, 1, "{id}");
        }
    }

    #[test]
    fn ids_from_strings_numbers_or_custom_id() {
        let m = |v: Value| v.as_object().cloned().unwrap_or_default();
        assert_eq!(
            row_id(&m(serde_json::json!({"id": 7})), "id"),
            Ok(Some("7".into()))
        );
        assert_eq!(
            row_id(&m(serde_json::json!({"custom_id": "a"})), "id"),
            Ok(Some("a".into()))
        );
        assert_eq!(row_id(&m(serde_json::json!({"x": 1})), "id"), Ok(None));
        assert!(row_id(&m(serde_json::json!({"id": [1]})), "id").is_err());
    }
}
