//! The benchmark's objects: an id and four small fields, about 135 bytes of JSON each.

use serde_json::json;

/// The JSON body of a push of objects `start..start + count` (version `version` of each).
pub fn push_body(start: usize, count: usize, version: usize) -> Vec<u8> {
    let items: Vec<_> = (start..start + count)
        .map(|i| {
            json!({
                "id": format!("{:032X}", i as u128 * 0x9E37_79B9_7F4A_7C15),
                "title": format!("Write the quarterly report, part {i}"),
                "done": version % 2 == 1,
                "priority": (i % 5) as i64,
                "due": 1_790_000_000 + i as i64,
            })
        })
        .collect();
    serde_json::to_vec(&items).expect("serializing to memory")
}

#[cfg(test)]
mod tests {
    #[test]
    fn objects_are_about_135_bytes() {
        let body = super::push_body(12_345, 100, 0);
        let per_object = body.len() / 100;
        assert!((110..=150).contains(&per_object), "{per_object} bytes");
    }
}
