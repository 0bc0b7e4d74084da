//! The service manager's readiness protocol (sd_notify): a detached start
//! run by a systemd unit of `Type=notify` tells systemd that the subhost is
//! up and that its init, not the launcher that is about to exit, is the
//! unit's main process; systemd then sees the init die and can restart the
//! subhost (`Restart=on-failure`).

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use anyhow::{Context, Result};

/// The message: ready, with `pid` as the main process.
pub fn message(name: &str, pid: i32) -> String {
    format!("READY=1\nMAINPID={pid}\nSTATUS=subhost {name} running (init PID {pid})\n")
}

/// Sends `text` to `$NOTIFY_SOCKET` (a path, or `@name` in the abstract
/// namespace); nothing when it is unset, as outside a notify unit.
pub fn send(text: &str) -> Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET").filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    let bytes = path.as_encoded_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(abs) => SocketAddr::from_abstract_name(abs),
        None => SocketAddr::from_pathname(&path),
    }
    .with_context(|| {
        format!(
            "NOTIFY_SOCKET={}: not a socket address",
            path.to_string_lossy()
        )
    })?;
    let sock = UnixDatagram::unbound().context("cannot create a socket for NOTIFY_SOCKET")?;
    sock.send_to_addr(text.as_bytes(), &addr)
        .with_context(|| format!("cannot notify {}", path.to_string_lossy()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_names_the_init_as_main_pid() {
        let dir = std::env::temp_dir().join(format!("subhost-test-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        // The only test of this process that sets NOTIFY_SOCKET.
        std::env::set_var("NOTIFY_SOCKET", &path);
        send(&message("web", 42)).unwrap();
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap(),
            "READY=1\nMAINPID=42\nSTATUS=subhost web running (init PID 42)\n"
        );
        send("ignored").unwrap();
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_dir(&dir);
    }
}
