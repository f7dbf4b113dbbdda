//! Telling systemd (a `Type=notify` unit) how the master is doing: ready
//! once both ports listen, reloading on SIGHUP, stopping. Outside such a
//! unit (`NOTIFY_SOCKET` unset) this does nothing.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (newline-separated `KEY=VALUE` lines, e.g. `READY=1`) to
/// the service manager, if one listens.
pub fn notify(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let sent = UnixDatagram::unbound().and_then(|sock| {
        use std::os::unix::ffi::OsStrExt;
        let bytes = socket.as_bytes();
        // `@name` is a socket in the abstract namespace.
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)
        } else {
            sock.send_to(state.as_bytes(), std::path::Path::new(&socket))
        }
    });
    if let Err(e) = sent {
        tracing::warn!(error = %e, "cannot tell the service manager the master's state");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_state_reaches_a_socket_named_by_path() {
        let dir = tempfile::tempdir().expect("test set-up");
        let path = dir.path().join("notify");
        let listener = std::os::unix::net::UnixDatagram::bind(&path).expect("test set-up");
        // The variable is read by this process only; no other test sets it.
        std::env::set_var("NOTIFY_SOCKET", &path);
        super::notify("READY=1\nSTATUS=serving");
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).expect("test set-up");
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");
    }
}
