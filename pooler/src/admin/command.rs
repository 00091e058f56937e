//! The console's grammar, as PgBouncer's: a command word and at most one argument, each a run of
//! letters, digits and `_` or a double-quoted name; case-insensitive; an optional trailing `;`.
//! `SET key = value` (or `TO`), the value a word, a double-quoted name or a single-quoted
//! string. `SELECT x` reads as `SHOW x`. What takes no argument, or a fixed one, is checked here
//! too, so that every query PgBouncer calls an invalid command is one here.

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
    /// SHOW <what> (lower-cased; empty when none was given, which no SHOW target is).
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
    /// DISABLE db (None: refused after the access check, `a database is required`).
    Disable(Option<String>),
    /// ENABLE db (as DISABLE).
    Enable(Option<String>),
    /// WAIT_CLOSE [db]
    WaitClose(Option<String>),
    /// RELOAD
    Reload,
    /// SWITCHOVER [candidate] (pgmux): a planned Patroni switchover that holds transactions.
    Switchover(Option<String>),
    /// SET key = value, both unquoted.
    Set(String, String),
    /// A query of blanks only (PgBouncer refuses it; an empty query's answer is kinder).
    Empty,
}

/// Why a console query is not a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Not the grammar, no such command, or an argument a command does not take. The console
    /// answers with PgBouncer's `invalid command '<query>', use SHOW HELP;`.
    #[error("invalid command")]
    Syntax,
    /// A command word, argument or SET key longer than PgBouncer's buffers (15, 63 and 63
    /// bytes, quotes included), or an empty quoted SET key.
    #[error("bad arguments")]
    BadArguments,
}

/// The longest command word, argument and SET key PgBouncer takes (its buffers less the NUL).
const MAX_WORD: usize = 15;
const MAX_ARG: usize = 63;

/// Parses one console query.
///
/// # Errors
/// [`CommandError::Syntax`] for what PgBouncer calls an invalid command,
/// [`CommandError::BadArguments`] for words too long.
pub fn parse(sql: &str) -> Result<Command, CommandError> {
    if sql.bytes().all(is_blank) {
        return Ok(Command::Empty);
    }
    if let Some((word, arg)) = command_form(sql) {
        let (word, arg) = (unquote(word, MAX_WORD)?, arg.map(|a| unquote(a, MAX_ARG)).transpose()?);
        return command(&word.to_ascii_lowercase(), arg);
    }
    let (key, value) = set_form(sql).ok_or(CommandError::Syntax)?;
    let key = unquote(key, MAX_ARG)?;
    if key.is_empty() {
        return Err(CommandError::BadArguments);
    }
    // pgmux reads keys case-insensitively, and takes values longer than PgBouncer's 255 bytes.
    Ok(Command::Set(key.to_ascii_lowercase(), unquote(value, usize::MAX)?))
}

/// The command named `word` with `arg`.
fn command(word: &str, arg: Option<String>) -> Result<Command, CommandError> {
    Ok(match word {
        "show" | "select" => Command::Show(arg.unwrap_or_default().to_ascii_lowercase()),
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
            Some(_) => return Err(CommandError::Syntax),
        },
        "disable" => Command::Disable(arg),
        "enable" => Command::Enable(arg),
        "wait_close" => Command::WaitClose(arg),
        "reload" if arg.is_none() => Command::Reload,
        "switchover" => Command::Switchover(arg),
        _ => return Err(CommandError::Syntax),
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

fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// A position in the query, moving forward over its grammar's pieces.
#[derive(Clone, Copy)]
struct Cursor<'a> {
    s: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a [u8] {
        &self.s.as_bytes()[self.at..]
    }

    /// Skips blanks; how many.
    fn blanks(&mut self) -> usize {
        let n = self.rest().iter().take_while(|b| is_blank(**b)).count();
        self.at += n;
        n
    }

    /// A double-quoted name (`""` inside stands for `"`) or a run of word bytes, as written.
    fn word(&mut self) -> Option<&'a str> {
        let start = self.at;
        if self.rest().first() == Some(&b'"') {
            self.quoted(b'"')?;
        } else {
            let n = self.rest().iter().take_while(|b| is_word_byte(**b)).count();
            if n == 0 {
                return None;
            }
            self.at += n;
        }
        Some(&self.s[start..self.at])
    }

    /// Past a string quoted with `q` (doubled inside), from its opening quote.
    fn quoted(&mut self, q: u8) -> Option<()> {
        let body = &self.rest()[1..];
        let mut i = 0;
        loop {
            match body.get(i)? {
                c if *c != q => i += 1,
                _ if body.get(i + 1) == Some(&q) => i += 2,
                _ => break,
            }
        }
        self.at += i + 2;
        Some(())
    }

    /// A single-quoted string, as written.
    fn string(&mut self) -> Option<&'a str> {
        let start = self.at;
        (self.rest().first() == Some(&b'\'')).then_some(())?;
        self.quoted(b'\'')?;
        Some(&self.s[start..self.at])
    }

    /// Blanks, perhaps a `;` and blanks, and nothing more.
    fn at_end(mut self) -> bool {
        self.blanks();
        if self.rest().first() == Some(&b';') {
            self.at += 1;
            self.blanks();
        }
        self.rest().is_empty()
    }
}

/// `word [arg] [;]`: the command word and its argument, as written.
fn command_form(sql: &str) -> Option<(&str, Option<&str>)> {
    let mut c = Cursor { s: sql, at: 0 };
    c.blanks();
    let word = c.word()?;
    let mut after_arg = c;
    if after_arg.blanks() > 0 {
        if let Some(arg) = after_arg.word() {
            if after_arg.at_end() {
                return Some((word, Some(arg)));
            }
        }
    }
    c.at_end().then_some((word, None))
}

/// `SET key =|TO value [;]`: the key and value, as written. An unquoted key may end where `to`
/// begins (`set key to 1`, even `set keyto 1`), as PgBouncer's regular expression lets it.
fn set_form(sql: &str) -> Option<(&str, &str)> {
    let mut c = Cursor { s: sql, at: 0 };
    c.blanks();
    if !c.rest().get(..3)?.eq_ignore_ascii_case(b"set") {
        return None;
    }
    c.at += 3;
    if c.blanks() == 0 {
        return None;
    }
    let start = c.at;
    let key = c.word()?;
    let word_end = c.at;
    // What follows the key when it ends at `end`: `=` or `to`, a value, the end.
    let rest_from = |end: usize| {
        let mut v = Cursor { s: sql, at: end };
        v.blanks();
        let r = v.rest();
        if r.first() == Some(&b'=') {
            v.at += 1;
        } else if r.get(..2).is_some_and(|t| t.eq_ignore_ascii_case(b"to")) {
            v.at += 2;
        } else {
            return None;
        }
        v.blanks();
        let value = v.string().or_else(|| v.word())?;
        v.at_end().then_some((&sql[start..end], value))
    };
    if let Some(found) = rest_from(word_end) {
        return Some(found);
    }
    if key.starts_with('"') {
        return None;
    }
    // An unquoted key may end inside the word, where a `to` begins: the rest of the word after
    // it is then the value, and what follows the word must be the end. Looked at once, not
    // again for each place (a long word of `to`s would cost its length squared).
    let word_ends_query = Cursor { s: sql, at: word_end }.at_end();
    (start + 1..word_end).rev().find_map(|end| {
        if !sql.as_bytes()[end..].get(..2).is_some_and(|t| t.eq_ignore_ascii_case(b"to")) {
            return None;
        }
        match end + 2 {
            value_at if value_at < word_end => word_ends_query.then(|| (&sql[start..end], &sql[value_at..word_end])),
            _ => rest_from(end),
        }
    })
}

/// A word or string as written, its quotes taken off and doubled quotes made single.
///
/// # Errors
/// Longer than `max` bytes as written.
fn unquote(raw: &str, max: usize) -> Result<String, CommandError> {
    if raw.len() > max {
        return Err(CommandError::BadArguments);
    }
    Ok(match raw.as_bytes().first() {
        Some(&q @ (b'"' | b'\'')) => {
            let q = char::from(q);
            raw[1..raw.len() - 1].replace(&format!("{q}{q}"), &q.to_string())
        }
        _ => raw.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pgbouncer_console_commands() {
        assert_eq!(parse("show pools;").unwrap(), Command::Show("pools".into()));
        assert_eq!(parse("  SHOW \t  STATS  ;  ").unwrap(), Command::Show("stats".into()));
        assert_eq!(parse("select version").unwrap(), Command::Show("version".into()));
        assert_eq!(parse("\"SHOW\" \"POOLS\"").unwrap(), Command::Show("pools".into()));
        assert_eq!(parse("show").unwrap(), Command::Show(String::new()));
        assert_eq!(parse("PAUSE").unwrap(), Command::Pause(None));
        assert_eq!(parse("pause app").unwrap(), Command::Pause(Some("app".into())));
        assert_eq!(parse("pause \"weird-db\"").unwrap(), Command::Pause(Some("weird-db".into())));
        assert_eq!(parse("pause \"a\"\"b\"").unwrap(), Command::Pause(Some("a\"b".into())));
        assert_eq!(parse("KILL_CLIENT 42").unwrap(), Command::KillClient("42".into()));
        assert_eq!(parse("kill_client abc").unwrap(), Command::KillClient("abc".into()));
        assert_eq!(parse("shutdown wait_for_clients").unwrap(), Command::Shutdown(ShutdownMode::WaitForClients));
        assert_eq!(parse("disable").unwrap(), Command::Disable(None));
        assert_eq!(parse(" ").unwrap(), Command::Empty);
    }

    #[test]
    fn set_takes_words_names_and_strings_after_an_equals_sign_or_to() {
        let set = |k: &str, v: &str| Command::Set(k.into(), v.into());
        assert_eq!(parse("SET default_pool_size = 50").unwrap(), set("default_pool_size", "50"));
        assert_eq!(parse("set default_pool_size=50;").unwrap(), set("default_pool_size", "50"));
        assert_eq!(parse("SET default_pool_size TO 8").unwrap(), set("default_pool_size", "8"));
        assert_eq!(parse("set x to5").unwrap(), set("x", "5"));
        assert_eq!(parse("set server_reset_query = 'DISCARD ALL'").unwrap(), set("server_reset_query", "DISCARD ALL"));
        assert_eq!(parse("set application_name_add_host = 'it''s'").unwrap(), set("application_name_add_host", "it's"));
        assert_eq!(parse("SET admin_users = \"admin\"").unwrap(), set("admin_users", "admin"));
        assert_eq!(parse("SET \"default_pool_size\" = \"12\"").unwrap(), set("default_pool_size", "12"));
        assert_eq!(parse("set ignore_startup_parameters = ''").unwrap(), set("ignore_startup_parameters", ""));
    }

    #[test]
    fn what_pgbouncer_calls_an_invalid_command_is_one() {
        for q in [
            ";",
            "drop table x",
            "suspend now",
            "reload x",
            "show pools now",
            "SHOW POOLS; SHOW STATS",
            "show pools;;",
            "-- comment\nshow pools",
            "shutdown later",
            "set verbose",
            "set x = 1 2",
            "set = 1",
            "set x = 'open",
            "kill_client -1",
            "pause weird-db",
        ] {
            assert_eq!(parse(q), Err(CommandError::Syntax), "{q}");
        }
        assert_eq!(parse("abcdefghijklmnop"), Err(CommandError::BadArguments));
        assert_eq!(parse(&format!("pause {}", "a".repeat(64))), Err(CommandError::BadArguments));
        assert_eq!(parse("set \"\" = 1"), Err(CommandError::BadArguments));
        assert!(parse(&format!("pause {}", "a".repeat(63))).is_ok());
    }

    /// A long word of `to`s is read in time linear in its length (each end of it could start
    /// the `TO` of a SET; a key longer than 63 bytes is refused whatever follows).
    #[test]
    fn a_long_set_key_is_read_in_one_pass() {
        let q = format!("set {} 1", "to".repeat(1 << 19));
        assert_eq!(parse(&q), Err(CommandError::BadArguments));
        let q = format!("set {};;", "to".repeat(1 << 19));
        assert_eq!(parse(&q), Err(CommandError::Syntax));
        // A key longer than PgBouncer takes is `bad arguments`, also when it ends at a `to`.
        let q = format!("set {}to 1", "k".repeat(70));
        assert_eq!(parse(&q), Err(CommandError::BadArguments));
        let q = format!("set {} = 1", "k".repeat(70));
        assert_eq!(parse(&q), Err(CommandError::BadArguments));
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
