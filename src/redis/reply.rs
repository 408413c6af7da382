//! Reading Redis's replies: values as strings and numbers, stream entries as (id, fields).

use redis::Value;

/// A reply's scalar as a string (`None` for nil, arrays and maps).
pub(crate) fn value_str(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Okay => Some("OK".into()),
        _ => None,
    }
}

/// A reply's scalar as a number (0 when it is none).
pub(crate) fn value_u64(v: &Value) -> u64 {
    match v {
        Value::Int(i) => (*i).max(0) as u64,
        other => value_str(other).and_then(|s| s.parse().ok()).unwrap_or(0),
    }
}

/// Entries of a stream reply, `[[id, [field, value, ...]], ...]`, as (id, fields).
pub(crate) fn parse_entries(v: &Value) -> Vec<(String, Vec<(String, String)>)> {
    let Value::Array(items) = v else { return Vec::new() };
    items
        .iter()
        .filter_map(|item| {
            let Value::Array(pair) = item else { return None };
            let id = value_str(pair.first()?)?;
            let fields = match pair.get(1)? {
                Value::Array(flat) => {
                    flat.chunks(2).filter_map(|c| Some((value_str(c.first()?)?, value_str(c.get(1)?)?))).collect()
                }
                Value::Map(m) => m.iter().filter_map(|(k, v)| Some((value_str(k)?, value_str(v)?))).collect(),
                _ => return None,
            };
            Some((id, fields))
        })
        .collect()
}

/// The names of the streams an `XREAD` reply has entries of (`[[name, entries], ...]`, or a
/// map of them); none for a nil reply (the wait timed out).
pub(crate) fn stream_names(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items
            .iter()
            .filter_map(|item| match item {
                Value::Array(pair) => value_str(pair.first()?),
                _ => None,
            })
            .collect(),
        Value::Map(m) => m.iter().filter_map(|(k, _)| value_str(k)).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stream_entries() {
        let v = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"1-0".to_vec()),
            Value::Array(vec![Value::BulkString(b"id".to_vec()), Value::BulkString(b"T1".to_vec())]),
        ])]);
        assert_eq!(parse_entries(&v), vec![("1-0".to_string(), vec![("id".to_string(), "T1".to_string())])]);
        assert!(parse_entries(&Value::Nil).is_empty());
    }

    #[test]
    fn names_the_streams_a_read_woke_for() {
        let entries = Value::Array(vec![]);
        let v = Value::Array(vec![Value::Array(vec![Value::BulkString(b"{sy}:lane:a".to_vec()), entries.clone()])]);
        assert_eq!(stream_names(&v), ["{sy}:lane:a"]);
        let m = Value::Map(vec![(Value::BulkString(b"{sy}:lane:b".to_vec()), entries)]);
        assert_eq!(stream_names(&m), ["{sy}:lane:b"]);
        assert!(stream_names(&Value::Nil).is_empty());
    }
}
