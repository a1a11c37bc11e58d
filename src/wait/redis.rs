//! The Redis readiness check: log in (`AUTH`), choose the database (`SELECT`), `PING`. A few
//! bytes of RESP, so no client crate: a port that accepts connections is not a Redis that
//! answers, and a Redis still loading its data set answers `-LOADING` to everything.

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::classify::{Class, Failure, Permanent};

/// What to log in with. The password is never printed (it is registered for redaction too).
#[derive(Clone)]
pub struct Login {
    pub user: Option<String>,
    pub password: Option<String>,
    pub db: u32,
}

/// Runs the handshake on a connected stream (TCP, or TLS for `rediss://`).
pub async fn check<S: AsyncRead + AsyncWrite + Unpin>(stream: S, login: &Login) -> Result<(), Failure> {
    let mut stream = BufReader::new(stream);
    if let Some(password) = &login.password {
        let mut args = vec!["AUTH"];
        if let Some(user) = &login.user {
            args.push(user);
        }
        args.push(password);
        command(&mut stream, &args).await?;
    }
    if login.db != 0 {
        command(&mut stream, &["SELECT", &login.db.to_string()]).await?;
    }
    let reply = command(&mut stream, &["PING"]).await?;
    if reply != "+PONG" {
        return Err(Failure::new(
            Class::Permanent(Permanent::Other),
            format!("PING answered '{reply}': not a Redis server?"),
        ));
    }
    Ok(())
}

/// Sends one command and reads its one-line reply (`+OK`, `+PONG`, or an error).
async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut BufReader<S>,
    args: &[&str],
) -> Result<String, Failure> {
    let mut out = format!("*{}\r\n", args.len());
    for arg in args {
        out.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    let io = |e: std::io::Error| Failure::new(crate::classify::classify_io(&e), e.to_string());
    stream.get_mut().write_all(out.as_bytes()).await.map_err(io)?;
    let mut line = String::new();
    // A reply line is short; a server that sends a megabyte without a newline is not Redis.
    let read = (&mut *stream).take(4096).read_line(&mut line).await.map_err(io)?;
    if read == 0 {
        return Err(Failure::new(Class::Network, "the server closed the connection"));
    }
    let line = line.trim_end().to_owned();
    match line.as_bytes().first() {
        Some(b'+') => Ok(line),
        Some(b'-') => Err(refusal(args[0], &line[1..])),
        _ => Err(Failure::new(
            Class::Permanent(Permanent::Other),
            format!("{} got an answer that is not RESP ('{}'): not a Redis server?", args[0], shorten(&line)),
        )),
    }
}

/// Classifies an error reply: still loading is "not yet"; a refused login is permanent.
fn refusal(command: &str, error: &str) -> Failure {
    let code = error.split_whitespace().next().unwrap_or_default();
    let class = match code {
        "LOADING" | "BUSY" | "MASTERDOWN" | "TRYAGAIN" => Class::NotReady,
        "WRONGPASS" | "NOAUTH" | "NOPERM" => Class::Permanent(Permanent::Login),
        // Old servers: `-ERR invalid password`, `-ERR AUTH <password> called without any password configured`.
        "ERR" if command == "AUTH" => Class::Permanent(Permanent::Login),
        "ERR" if command == "SELECT" => Class::Permanent(Permanent::NoDatabase),
        _ => Class::Permanent(Permanent::Other),
    };
    Failure::new(class, format!("{command}: {}", shorten(error)))
}

fn shorten(s: &str) -> String {
    s.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_replies_are_classified() {
        assert_eq!(refusal("PING", "LOADING Redis is loading the dataset in memory").class, Class::NotReady);
        assert_eq!(
            refusal("AUTH", "WRONGPASS invalid username-password pair").class,
            Class::Permanent(Permanent::Login)
        );
        assert_eq!(
            refusal("PING", "NOAUTH Authentication required.").class,
            Class::Permanent(Permanent::Login)
        );
        assert_eq!(refusal("AUTH", "ERR invalid password").class, Class::Permanent(Permanent::Login));
        assert_eq!(
            refusal("SELECT", "ERR DB index is out of range").class,
            Class::Permanent(Permanent::NoDatabase)
        );
    }
}
