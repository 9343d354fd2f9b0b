//! Handing an open file from the sandboxed `codex-fs` helper to the server (sandbox.md §5): the
//! helper's stdout is one end of a Unix socket pair, and its answer line to an `fs/open` carries
//! the opened descriptor as SCM_RIGHTS. The server reads to EOF (the helper's exit), so a helper
//! that dies half-way shows as a short answer or a missing descriptor, never a hang.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, recvmsg, sendmsg,
};

/// Most answer bytes the server takes from the helper.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Sends all of `bytes` on `socket`, with `fd` attached to the first message.
pub fn send_with_fd(socket: BorrowedFd<'_>, bytes: &[u8], fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [fd];
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("no room for the descriptor"));
    }
    let mut sent = 0;
    while sent < bytes.len() {
        let n = if sent == 0 {
            sendmsg(
                socket,
                &[IoSlice::new(bytes)],
                &mut control,
                SendFlags::NOSIGNAL,
            )
        } else {
            rustix::net::send(socket, &bytes[sent..], SendFlags::NOSIGNAL)
        };
        match n {
            Ok(n) => sent += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Reads `socket` to EOF: the bytes (at most [`MAX_ANSWER_BYTES`]) and the first descriptor
/// received with them (any further ones are closed).
pub fn recv_to_end_with_fd(socket: impl AsFd) -> io::Result<(Vec<u8>, Option<OwnedFd>)> {
    let mut bytes = Vec::new();
    let mut received: Option<OwnedFd> = None;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let msg = match recvmsg(
            &socket,
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(msg) => msg,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = message {
                for fd in fds {
                    if received.is_none() {
                        received = Some(fd);
                    }
                }
            }
        }
        if msg.bytes == 0 {
            return Ok((bytes, received));
        }
        if bytes.len() + msg.bytes > MAX_ANSWER_BYTES {
            return Err(io::Error::other(
                "the fs sandbox helper's answer is too long",
            ));
        }
        bytes.extend_from_slice(&buf[..msg.bytes]);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn a_descriptor_sent_with_the_bytes_arrives_with_them() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        let line = vec![b'x'; 200 << 10];
        let sender = std::thread::spawn(move || {
            send_with_fd(theirs.as_fd(), &line, file.as_fd()).unwrap();
        });
        let (bytes, fd) = recv_to_end_with_fd(&ours).unwrap();
        sender.join().unwrap();
        assert_eq!(bytes.len(), 200 << 10, "all of a long answer");
        let received = std::fs::File::from(fd.expect("a descriptor"));
        assert!(received.metadata().unwrap().len() > 0);
    }

    #[test]
    fn a_peer_that_dies_gives_what_it_sent_and_no_descriptor() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        theirs.write_all(b"{\"status\":").unwrap();
        drop(theirs);
        let (bytes, fd) = recv_to_end_with_fd(&ours).unwrap();
        assert_eq!(bytes, b"{\"status\":");
        assert!(fd.is_none());
        let (ours, theirs) = UnixStream::pair().unwrap();
        drop(theirs);
        assert_eq!(recv_to_end_with_fd(&ours).unwrap().0, b"");
    }
}
