//! Passing open file descriptors between processes over a Unix socket (SCM_RIGHTS): how a
//! new data-plane process takes over the listening sockets of the one it replaces, so no
//! connection attempt is refused during an upgrade.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// At most this many descriptors in one message.
pub const MAX_FDS: usize = 64;

fn cmsg_space(n: usize) -> usize {
    // SAFETY: CMSG_SPACE is arithmetic on its argument.
    unsafe { libc::CMSG_SPACE((n * std::mem::size_of::<RawFd>()) as u32) as usize }
}

/// Sends `bytes` with `fds` attached (the descriptors stay open here too).
pub fn send(sock: &UnixStream, bytes: &[u8], fds: &[OwnedFd]) -> std::io::Result<()> {
    if fds.len() > MAX_FDS || bytes.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "1 to 64 descriptors with at least one byte",
        ));
    }
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let mut cbuf = vec![0u8; cmsg_space(raw.len().max(1))];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: msghdr points at `iov` and `cbuf`, both alive for the call; the control
    // message is written inside `cbuf`, whose size CMSG_SPACE computed for `raw.len()`
    // descriptors.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !raw.is_empty() {
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = cbuf.len() as _;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN((raw.len() * std::mem::size_of::<RawFd>()) as u32) as _;
            std::ptr::copy_nonoverlapping(
                raw.as_ptr(),
                libc::CMSG_DATA(c).cast::<RawFd>(),
                raw.len(),
            );
        }
        let mut sent = 0usize;
        while sent == 0 {
            let r = libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL);
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            sent = r as usize;
        }
        if sent < bytes.len() {
            // The descriptors went with the first bytes; the rest is plain data.
            use std::io::Write;
            (&*sock).write_all(&bytes[sent..])?;
        }
    }
    Ok(())
}

/// Receives up to `max` bytes and the descriptors attached to them.
pub fn recv(sock: &UnixStream, max: usize) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; max.max(1)];
    let mut cbuf = vec![0u8; cmsg_space(MAX_FDS)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut fds = vec![];
    // SAFETY: msghdr points at `iov` (over `buf`) and `cbuf`, alive for the call; the
    // control messages read back are within `msg_controllen` bytes of `cbuf` (the CMSG_*
    // macros keep to it); each descriptor received is new to this process and owned here.
    let n = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = cbuf.len() as _;
        let n = loop {
            let r = libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            break r as usize;
        };
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        n
    };
    buf.truncate(n);
    Ok((buf, fds))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_listening_socket_crosses_over_and_still_accepts() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        super::send(&a, b"[1]\n", &[std::os::fd::OwnedFd::from(l)]).unwrap();
        let (bytes, fds) = super::recv(&b, 64).unwrap();
        assert_eq!(bytes, b"[1]\n");
        assert_eq!(fds.len(), 1);
        let l2 = std::net::TcpListener::from(fds.into_iter().next().unwrap());
        assert_eq!(l2.local_addr().unwrap(), addr);
        let _c = std::net::TcpStream::connect(addr).unwrap();
        l2.accept().unwrap();
    }
}
