//! `pgmux switchover CONFIG.ini [CANDIDATE]`: logs in to the running pgmux's console (unix
//! socket when the ini has one, else its TCP port) and runs SWITCHOVER.

use std::path::Path;

use super::ToolError;
use crate::config::{self, StoredSecret, ADMIN_DB};

pub(super) async fn run(path: &Path, candidate: Option<String>, user: Option<String>) -> Result<(), ToolError> {
    let config = config::load(path)?;
    let g = &config.general;
    let user = user
        .or_else(|| g.admin_users.first().cloned())
        .ok_or_else(|| ToolError::Setting("no console user: pass -U or set admin_users".into()))?;
    let mut pg = tokio_postgres::Config::new();
    pg.user(&user).dbname(ADMIN_DB).port(g.listen_port).application_name("pgmux switchover");
    if g.unix_socket_dir.is_empty() {
        let host = match g.listen_addr.first().map(String::as_str) {
            None | Some("*") | Some("0.0.0.0") => "127.0.0.1",
            Some("::") => "::1",
            Some(h) => h,
        };
        pg.host(host);
    } else {
        pg.host_path(&g.unix_socket_dir);
    }
    match std::env::var("PGPASSWORD").ok() {
        Some(pw) => {
            pg.password(pw);
        }
        None => {
            if let Some(StoredSecret::Plain(pw)) = config.auth_file.get(&user) {
                pg.password(pw.clone());
            }
        }
    }
    let (client, conn) =
        pg.connect(tokio_postgres::NoTls).await.map_err(|e| ToolError::Console(format!("console: {e}")))?;
    tokio::spawn(conn);
    let sql = match candidate {
        Some(c) => format!("SWITCHOVER \"{}\"", c.replace('"', "")),
        None => "SWITCHOVER".to_owned(),
    };
    let rows = client.simple_query(&sql).await.map_err(|e| {
        ToolError::Console(match e.as_db_error() {
            Some(db) => db.message().to_owned(),
            None => e.to_string(),
        })
    })?;
    for msg in rows {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = msg {
            println!(
                "switched over from {} to {}: new transactions held {} ms, {} ms in all",
                r.get(0).unwrap_or("?"),
                r.get(1).unwrap_or("?"),
                r.get(2).unwrap_or("?"),
                r.get(3).unwrap_or("?")
            );
        }
    }
    Ok(())
}
