//! The console's grammar, as PgBouncer's: one command word and at most one argument,
//! case-insensitive, optional trailing `;`; `SET key = value`; `SELECT x` read as `SHOW x`.

/// How SHUTDOWN should proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    /// Close everything now.
    Immediate,
    /// Wait for servers to be released.
    WaitForServers,
    /// Wait for clients to leave.
    WaitForClients,
}

/// A parsed console command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// SHOW <what> (lower-cased).
    Show(String),
    /// PAUSE [db]
    Pause(Option<String>),
    /// RESUME [db]
    Resume(Option<String>),
    /// RECONNECT [db]
    Reconnect(Option<String>),
    /// KILL [db]
    Kill(Option<String>),
    /// KILL_CLIENT id, the argument as given: it is read after the access check, as PgBouncer
    /// does (`invalid client pointer supplied` only for admins).
    KillClient(String),
    /// SUSPEND
    Suspend,
    /// SHUTDOWN [WAIT_FOR_SERVERS | WAIT_FOR_CLIENTS]
    Shutdown(ShutdownMode),
    /// DISABLE db
    Disable(String),
    /// ENABLE db
    Enable(String),
    /// WAIT_CLOSE [db]
    WaitClose(Option<String>),
    /// RELOAD
    Reload,
    /// SWITCHOVER [candidate] (pgmux): a planned Patroni switchover that holds transactions.
    Switchover(Option<String>),
    /// SET key = value
    Set(String, String),
    /// An empty query.
    Empty,
}

/// Why a console query is not a command, in PgBouncer's words (the console's error message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No such command, or an argument where it takes none.
    #[error("invalid command")]
    Unknown,
    /// More than one argument.
    #[error("invalid command: too many arguments")]
    TooManyArguments,
    /// The command (upper-cased) takes an argument and has none.
    #[error("{0} needs an argument")]
    NeedsArgument(String),
    /// SHUTDOWN with a mode other than WAIT_FOR_SERVERS or WAIT_FOR_CLIENTS.
    #[error("invalid SHUTDOWN mode: {0}")]
    ShutdownMode(String),
    /// SET without `=`.
    #[error("bad SET command, expected SET key = value")]
    BadSet,
}

/// Parses one console query.
///
/// # Errors
/// PgBouncer-style messages for unknown commands and bad arguments.
pub fn parse(sql: &str) -> Result<Command, CommandError> {
    let text = sql.trim().trim_end_matches(';').trim();
    if text.is_empty() {
        return Ok(Command::Empty);
    }
    let (word, rest) = match text.split_once(char::is_whitespace) {
        Some((w, r)) => (w, r.trim()),
        None => (text, ""),
    };
    let word = word.to_ascii_lowercase();
    if word == "set" {
        let (k, v) = rest.split_once('=').ok_or(CommandError::BadSet)?;
        let v = v.trim();
        let v = v
            .strip_prefix('\'')
            .and_then(|x| x.strip_suffix('\''))
            .map(|x| x.replace("''", "'"))
            .unwrap_or_else(|| v.to_owned());
        return Ok(Command::Set(k.trim().to_ascii_lowercase(), v));
    }
    if rest.split_whitespace().count() > 1 {
        return Err(CommandError::TooManyArguments);
    }
    let arg = (!rest.is_empty()).then(|| unquote(rest));
    let need = |a: Option<String>| a.ok_or_else(|| CommandError::NeedsArgument(word.to_ascii_uppercase()));
    Ok(match word.as_str() {
        "show" | "select" => Command::Show(need(arg)?.to_ascii_lowercase()),
        "pause" => Command::Pause(arg),
        "resume" => Command::Resume(arg),
        "reconnect" => Command::Reconnect(arg),
        "kill" => Command::Kill(arg),
        "kill_client" => Command::KillClient(arg.unwrap_or_default()),
        "suspend" if arg.is_none() => Command::Suspend,
        "shutdown" => match arg.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None => Command::Shutdown(ShutdownMode::Immediate),
            Some("wait_for_servers") => Command::Shutdown(ShutdownMode::WaitForServers),
            Some("wait_for_clients") => Command::Shutdown(ShutdownMode::WaitForClients),
            Some(other) => return Err(CommandError::ShutdownMode(other.to_owned())),
        },
        "disable" => Command::Disable(need(arg)?),
        "enable" => Command::Enable(need(arg)?),
        "wait_close" => Command::WaitClose(arg),
        "reload" if arg.is_none() => Command::Reload,
        "switchover" => Command::Switchover(arg),
        _ => return Err(CommandError::Unknown),
    })
}

/// The id of `KILL_CLIENT <id>` as PgBouncer reads it (`sscanf("%llu")`): leading blanks, an
/// optional sign, then digits; anything after the digits is ignored. None when no digit leads.
pub fn client_id(arg: &str) -> Option<u64> {
    let t = arg.trim_start();
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let n = t[..digits].bytes().fold(0u64, |n, d| n.wrapping_mul(10).wrapping_add(u64::from(d - b'0')));
    Some(if neg { n.wrapping_neg() } else { n })
}

/// Database names may be double-quoted.
fn unquote(s: &str) -> String {
    s.strip_prefix('"').and_then(|x| x.strip_suffix('"')).unwrap_or(s).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pgbouncer_console_commands() {
        assert_eq!(parse("show pools;").unwrap(), Command::Show("pools".into()));
        assert_eq!(parse("  SHOW   STATS  ").unwrap(), Command::Show("stats".into()));
        assert_eq!(parse("select version").unwrap(), Command::Show("version".into()));
        assert_eq!(parse("PAUSE").unwrap(), Command::Pause(None));
        assert_eq!(parse("pause app").unwrap(), Command::Pause(Some("app".into())));
        assert_eq!(parse("KILL_CLIENT 42").unwrap(), Command::KillClient("42".into()));
        assert_eq!(parse("kill_client abc").unwrap(), Command::KillClient("abc".into()));
        assert_eq!(parse("shutdown wait_for_clients").unwrap(), Command::Shutdown(ShutdownMode::WaitForClients));
        assert_eq!(parse("SET default_pool_size = 50").unwrap(), Command::Set("default_pool_size".into(), "50".into()));
        assert_eq!(
            parse("set server_reset_query = 'DISCARD ALL'").unwrap(),
            Command::Set("server_reset_query".into(), "DISCARD ALL".into())
        );
        assert_eq!(parse(";").unwrap(), Command::Empty);
        assert!(parse("drop table x").is_err());
        assert!(parse("show pools now").is_err());
        assert!(parse("show").is_err());
    }

    #[test]
    fn errors_say_what_pgbouncer_says() {
        let e = |sql: &str| parse(sql).unwrap_err().to_string();
        assert_eq!(e("drop x"), "invalid command");
        assert_eq!(e("suspend now"), "invalid command");
        assert_eq!(e("show pools now"), "invalid command: too many arguments");
        assert_eq!(e("disable"), "DISABLE needs an argument");
        assert_eq!(e("shutdown Later"), "invalid SHUTDOWN mode: later");
        assert_eq!(e("set verbose"), "bad SET command, expected SET key = value");
    }

    #[test]
    fn client_ids_are_read_as_pgbouncer_reads_them() {
        assert_eq!(client_id("42"), Some(42));
        assert_eq!(client_id(" 7x"), Some(7));
        assert_eq!(client_id("non_existant_client_id"), None);
        assert_eq!(client_id(""), None);
        assert_eq!(client_id("-"), None);
    }
}
