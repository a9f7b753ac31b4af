//! Local ports: whether a port on 127.0.0.1 is free, who holds it, and binding the listeners
//! of the forwards (with the fallback to the next free port).

use std::io::ErrorKind;
use std::net::{Ipv4Addr, Ipv6Addr, TcpListener};

/// Whether 127.0.0.1:`port` can be bound now.
pub fn is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// The process listening on `port`, as "name (pid N)", when the OS lets us see it.
pub fn owner(port: u16) -> Option<String> {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let link = link.to_string_lossy();
            let holds = link
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .is_some_and(|inode| inodes.iter().any(|i| i == inode));
            if holds {
                let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                return Some(format!("{} (pid {pid})", comm.trim()));
            }
        }
    }
    None
}

/// Socket inodes listening on `port` (any address), from /proc/net/tcp{,6}.
fn listening_inodes(port: u16) -> Vec<String> {
    const LISTEN: &str = "0A";
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 || cols[3] != LISTEN {
                continue;
            }
            let local_port = cols[1]
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) {
                inodes.push(cols[9].to_string());
            }
        }
    }
    inodes
}

/// Listeners on one local port: 127.0.0.1 always; [::1] too when the host has IPv6, because
/// browsers resolve `localhost` to ::1 first and would otherwise miss the forward.
pub(super) struct Listening {
    pub port: u16,
    pub v4: TcpListener,
    pub v6: Option<TcpListener>,
    /// Who holds [::1]:port when someone else does (so `localhost` may not reach devloop).
    pub v6_holder: Option<String>,
}

/// Bind `port` on loopback; `Err` is the 127.0.0.1 bind's error.
pub(super) fn listen(port: u16) -> std::io::Result<Listening> {
    let v4 = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
    let (v6, v6_holder) = match TcpListener::bind((Ipv6Addr::LOCALHOST, port)) {
        Ok(l) => (Some(l), None),
        Err(e) if e.kind() == ErrorKind::AddrInUse => (
            None,
            Some(owner(port).unwrap_or_else(|| "another process".into())),
        ),
        // No IPv6 on this host: 127.0.0.1 is all there is.
        Err(_) => (None, None),
    };
    Ok(Listening {
        port,
        v4,
        v6,
        v6_holder,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_holder_of_a_busy_port() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(!is_free(port));
        if cfg!(target_os = "linux") {
            let owner = owner(port).expect("our own listener is visible in /proc");
            assert!(
                owner.contains(&format!("pid {}", std::process::id())),
                "{owner}"
            );
        }
        drop(listener);
        assert!(is_free(port));
    }
}
