//! What the end-to-end tests (`tests/api`) and the soak program (`src/bin/soak`) share.

/// `url` with its database name replaced by `dbname`, query kept
/// (`postgres://u@h:5432/postgres?x=y` to `postgres://u@h:5432/DBNAME?x=y`).
pub fn with_dbname(url: &str, dbname: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{dbname}?{query}"),
        None => format!("{base}/{dbname}"),
    }
}

#[cfg(test)]
mod tests {
    use super::with_dbname;

    #[test]
    fn the_database_name_is_replaced_and_the_query_kept() {
        assert_eq!(with_dbname("postgres://u@h:5432/postgres?x=y", "d"), "postgres://u@h:5432/d?x=y");
        assert_eq!(with_dbname("postgres://u@h:5432", "d"), "postgres://u@h:5432/d");
        assert_eq!(with_dbname("postgres://u@h/a/b", "d"), "postgres://u@h/d");
    }
}
