//! How long ago a TCP socket last received data, from `TCP_INFO`: the transport's one system
//! call that no crate wraps. A peer in the middle of sending a large frame slowly has sent no
//! whole frame for a while, yet is plainly alive; this is how the silence check tells.
#![allow(unsafe_code)]

use std::os::fd::RawFd;
#[cfg(test)]
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

/// The descriptor number of the TCP socket under a WebSocket stream, for `TCP_INFO` and
/// `TCP_QUICKACK` without a duplicate of the socket (one descriptor per connection, not two).
/// Whoever uses one must hold the stream that owns the socket: the WebSocket reader holds its
/// half of the stream for as long as it uses the number, so the number names that socket.
#[derive(Debug, Clone, Copy)]
pub(super) struct SocketNumber(pub(super) RawFd);

impl SocketNumber {
    /// Time since the socket's last received data segment; `None` if it is not a TCP socket.
    pub(super) fn since_last_data_received(self) -> Option<Duration> {
        since_last_data_received_raw(self.0)
    }

    /// Re-arms TCP_QUICKACK (the kernel clears it on its own).
    pub(super) fn quickack(self) {
        let on: libc::c_int = 1;
        // SAFETY: a setsockopt of one int read from a valid local; on a number that is not a
        // TCP socket it fails, and nothing else happens.
        unsafe {
            libc::setsockopt(
                self.0,
                libc::IPPROTO_TCP,
                libc::TCP_QUICKACK,
                (&raw const on).cast::<libc::c_void>(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

/// Time since `fd`'s last received data segment; `None` if `fd` is not a TCP socket.
#[cfg(test)]
pub fn since_last_data_received(fd: BorrowedFd<'_>) -> Option<Duration> {
    since_last_data_received_raw(fd.as_raw_fd())
}

/// [`since_last_data_received`] by descriptor number.
fn since_last_data_received_raw(fd: RawFd) -> Option<Duration> {
    // SAFETY: `tcp_info` is a plain C struct of integers, for which all-zero bytes are valid.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is a valid, writable `tcp_info` of `len` bytes, and `len` a valid in/out
    // length; the kernel writes at most `len` bytes and stores how many it wrote.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast::<libc::c_void>(),
            &mut len,
        )
    };
    let needed = std::mem::offset_of!(libc::tcp_info, tcpi_last_data_recv) + 4;
    (rc == 0 && len as usize >= needed)
        .then(|| Duration::from_millis(u64::from(info.tcpi_last_data_recv)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::os::fd::AsFd as _;

    #[test]
    fn a_fresh_tcp_socket_has_a_recent_receive_and_a_pipe_has_none() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        client.write_all(b"x").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let since = since_last_data_received(server.as_fd()).expect("a TCP socket");
        assert!(since < Duration::from_secs(5), "{since:?}");
        let (read, _write) = std::io::pipe().unwrap();
        assert_eq!(since_last_data_received(read.as_fd()), None);
    }
}
