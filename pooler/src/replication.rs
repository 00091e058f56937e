//! A connection's replication kind, asked for by the client's `replication` startup parameter
//! and printed in SHOW CLIENTS' and SHOW SERVERS' `replication` column as PgBouncer prints it.

/// None, logical (`replication=database`) or physical (`replication=true` and its spellings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum Replication {
    /// A normal connection.
    #[default]
    None,
    /// Logical replication, on a database.
    Logical,
    /// Physical replication, of the whole cluster.
    Physical,
}

impl Replication {
    /// The kind a `replication` startup value asks for, as PostgreSQL reads it: `database` is
    /// logical, a true boolean physical, anything else none.
    pub fn of_value(v: &str) -> Self {
        if v.eq_ignore_ascii_case("database") {
            Replication::Logical
        } else if ["true", "on", "yes", "1"].iter().any(|t| v.eq_ignore_ascii_case(t)) {
            Replication::Physical
        } else {
            Replication::None
        }
    }

    /// The kind startup parameters ask for (their `replication` value).
    pub fn of_params(params: &[(String, String)]) -> Self {
        params.iter().find(|(k, _)| k == "replication").map_or(Replication::None, |(_, v)| Self::of_value(v))
    }

    /// As PgBouncer's `login attempt` log line names it.
    pub fn log_word(self) -> &'static str {
        match self {
            Replication::None => "no",
            Replication::Logical => "database",
            Replication::Physical => "yes",
        }
    }

    /// As SHOW CLIENTS and SHOW SERVERS print it.
    pub fn as_str(self) -> &'static str {
        match self {
            Replication::None => "none",
            Replication::Logical => "logical",
            Replication::Physical => "physical",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Replication;

    #[test]
    fn startup_values_read_as_postgresql_reads_them() {
        for (v, kind) in [
            ("database", Replication::Logical),
            ("DATABASE", Replication::Logical),
            ("true", Replication::Physical),
            ("On", Replication::Physical),
            ("1", Replication::Physical),
            ("false", Replication::None),
            ("0", Replication::None),
        ] {
            assert_eq!(Replication::of_value(v), kind, "{v}");
        }
        let params =
            vec![("application_name".to_owned(), "x".to_owned()), ("replication".to_owned(), "yes".to_owned())];
        assert_eq!(Replication::of_params(&params).as_str(), "physical");
        assert_eq!(Replication::of_params(&[]).as_str(), "none");
    }
}
