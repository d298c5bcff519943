//! Many UDP datagrams per system call (`recvmmsg`, `sendmmsg`), as NSD and Knot read and
//! answer: on a busy socket the calls, not the work, are what costs.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

/// Most datagrams one call moves.
pub const MAX_BATCH: usize = 64;

fn to_addr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large
            // and aligned enough for.
            let a = unsafe { &*(s as *const libc::sockaddr_storage as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn from_addr(a: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
    let mut s: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in.
            let sin =
                unsafe { &mut *(&mut s as *mut libc::sockaddr_storage as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 =
                unsafe { &mut *(&mut s as *mut libc::sockaddr_storage as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_addr.s6_addr = v6.ip().octets();
            sin6.sin6_flowinfo = v6.flowinfo();
            sin6.sin6_scope_id = v6.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (s, len as libc::socklen_t)
}

/// Receive buffers for [`recv`], reused call after call (with the call's headers, so
/// that a call allocates nothing).
pub struct RecvBatch {
    bufs: Vec<Vec<u8>>,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// `(length, sender)` of each datagram of the last call, in `buf(i)`.
    pub got: Vec<(usize, SocketAddr)>,
}

impl RecvBatch {
    /// `n` buffers (at most [`MAX_BATCH`]) of `size` bytes; a longer datagram is cut.
    pub fn new(n: usize, size: usize) -> RecvBatch {
        let n = n.clamp(1, MAX_BATCH);
        RecvBatch {
            bufs: (0..n).map(|_| vec![0u8; size]).collect(),
            // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
            addrs: (0..n).map(|_| unsafe { std::mem::zeroed() }).collect(),
            iovs: Vec::with_capacity(n),
            // SAFETY: mmsghdr is plain old data; all zeroes is a valid value.
            hdrs: (0..n).map(|_| unsafe { std::mem::zeroed() }).collect(),
            got: Vec::with_capacity(n),
        }
    }

    /// The bytes of datagram `i` of the last call.
    pub fn datagram(&self, i: usize) -> &[u8] {
        &self.bufs[i][..self.got[i].0]
    }
}

/// Waits for at least one datagram on `sock` (up to its read timeout), then takes as many
/// more as are queued, up to the batch's size; how many.
pub fn recv(sock: &UdpSocket, b: &mut RecvBatch) -> std::io::Result<usize> {
    let n = b.bufs.len();
    b.iovs.clear();
    b.iovs.extend(b.bufs.iter_mut().map(|buf| libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    }));
    let (iovs, hdrs) = (&mut b.iovs, &mut b.hdrs);
    for i in 0..n {
        hdrs[i].msg_len = 0;
        hdrs[i].msg_hdr.msg_name =
            &mut b.addrs[i] as *mut libc::sockaddr_storage as *mut libc::c_void;
        hdrs[i].msg_hdr.msg_namelen =
            std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
        hdrs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: every header points at a buffer and an address owned by `b` (or `iovs`),
    // alive and not otherwise borrowed for the call; the count is the headers' number.
    let r = unsafe {
        libc::recvmmsg(
            sock.as_raw_fd(),
            hdrs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_WAITFORONE,
            std::ptr::null_mut(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    b.got.clear();
    for (i, h) in hdrs.iter().enumerate().take(r as usize) {
        let from = to_addr(&b.addrs[i]).unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        b.got
            .push(((h.msg_len as usize).min(b.bufs[i].len()), from));
    }
    Ok(b.got.len())
}

/// Scratch space for [`send_with`], reused call after call so that a call allocates
/// nothing.
#[derive(Default)]
pub struct SendBuf {
    addrs: Vec<(libc::sockaddr_storage, libc::socklen_t)>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

/// Sends each `(bytes, to)` in as few calls as it takes; how many went.
pub fn send<B: AsRef<[u8]>>(sock: &UdpSocket, msgs: &[(B, SocketAddr)]) -> std::io::Result<usize> {
    send_with(sock, msgs, &mut SendBuf::default())
}

/// [`send`] with scratch space of the caller's.
pub fn send_with<B: AsRef<[u8]>>(
    sock: &UdpSocket,
    msgs: &[(B, SocketAddr)],
    buf: &mut SendBuf,
) -> std::io::Result<usize> {
    let mut sent = 0;
    while sent < msgs.len() {
        let chunk = &msgs[sent..msgs.len().min(sent + MAX_BATCH)];
        buf.addrs.clear();
        buf.addrs.extend(chunk.iter().map(|(_, to)| from_addr(to)));
        buf.iovs.clear();
        buf.iovs.extend(chunk.iter().map(|(bytes, _)| libc::iovec {
            iov_base: bytes.as_ref().as_ptr() as *mut libc::c_void,
            iov_len: bytes.as_ref().len(),
        }));
        buf.hdrs.clear();
        // SAFETY: mmsghdr is plain old data; all zeroes is a valid value, filled in below.
        buf.hdrs
            .extend((0..chunk.len()).map(|_| unsafe { std::mem::zeroed::<libc::mmsghdr>() }));
        for i in 0..chunk.len() {
            buf.hdrs[i].msg_hdr.msg_name =
                &mut buf.addrs[i].0 as *mut libc::sockaddr_storage as *mut libc::c_void;
            buf.hdrs[i].msg_hdr.msg_namelen = buf.addrs[i].1;
            buf.hdrs[i].msg_hdr.msg_iov = &mut buf.iovs[i];
            buf.hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at bytes and an address alive for the call (the
        // kernel only reads the iovecs' bytes); the count is the headers' number.
        let r = unsafe {
            libc::sendmmsg(
                sock.as_raw_fd(),
                buf.hdrs.as_mut_ptr(),
                buf.hdrs.len() as libc::c_uint,
                0,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if sent > 0 {
                return Ok(sent);
            }
            return Err(e);
        }
        if r == 0 {
            break;
        }
        sent += r as usize;
    }
    Ok(sent)
}

/// Steers datagrams of a `SO_REUSEPORT` group to the socket whose index is the CPU that
/// received them (a classic BPF program returning that CPU; past the group's size the
/// kernel falls back to its hash). With a socket and a thread per CPU, each query is
/// answered on the CPU that took it in, and the load follows the clients' CPUs instead of
/// a hash of their few source ports.
pub fn steer_by_cpu(sock: &impl std::os::fd::AsRawFd) -> std::io::Result<()> {
    // SO_ATTACH_REUSEPORT_CBPF, the same number on every architecture veeps builds for.
    const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
    let mut prog = [
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: (libc::SKF_AD_OFF + libc::SKF_AD_CPU) as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_A) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: the program and its descriptor outlive the call, which copies them.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            &fprog as *const libc::sock_fprog as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Keeps the calling thread on CPU `cpu` (modulo the CPUs there are).
pub fn pin_to_cpu(cpu: usize) -> std::io::Result<()> {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes within it.
    let r = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu % n, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_go_and_come_in_batches_with_their_senders() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let to = server.local_addr().unwrap();
        let clients: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for (i, c) in clients.iter().enumerate() {
            c.send_to(format!("hello {i}").as_bytes(), to).unwrap();
        }
        let mut b = RecvBatch::new(8, 512);
        let mut seen = vec![];
        while seen.len() < 3 {
            let n = recv(&server, &mut b).unwrap();
            for i in 0..n {
                seen.push((
                    String::from_utf8(b.datagram(i).to_vec()).unwrap(),
                    b.got[i].1,
                ));
            }
        }
        seen.sort();
        for (i, (text, from)) in seen.iter().enumerate() {
            assert_eq!(text, &format!("hello {i}"));
            assert_eq!(*from, clients[i].local_addr().unwrap());
        }
        // Answers to each, in one call.
        let replies: Vec<(Vec<u8>, SocketAddr)> = seen
            .iter()
            .map(|(t, from)| (t.to_uppercase().into_bytes(), *from))
            .collect();
        let msgs: Vec<(&[u8], SocketAddr)> =
            replies.iter().map(|(b, a)| (b.as_slice(), *a)).collect();
        assert_eq!(send(&server, &msgs).unwrap(), 3);
        for (i, c) in clients.iter().enumerate() {
            let mut buf = [0u8; 64];
            c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            let (n, _) = c.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], format!("HELLO {i}").as_bytes());
        }
        // A datagram longer than its buffer is cut, not an error.
        clients[0].send_to(&[7u8; 1000], to).unwrap();
        let n = recv(&server, &mut b).unwrap();
        assert_eq!((n, b.got[0].0), (1, 512));
    }

    /// With the program attached, what a CPU sends to the group lands on the socket of
    /// that CPU's index (loopback takes a datagram in on the sender's CPU).
    #[test]
    fn reuseport_datagrams_are_steered_by_cpu() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let bind = |at: std::net::SocketAddr| {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
            s.set_reuse_port(true).unwrap();
            s.bind(&at.into()).unwrap();
            s.set_nonblocking(true).unwrap();
            UdpSocket::from(s)
        };
        let first = bind("127.0.0.1:0".parse().unwrap());
        let to = first.local_addr().unwrap();
        let socks: Vec<UdpSocket> = std::iter::once(first)
            .chain((1..cpus.min(4)).map(|_| bind(to)))
            .collect();
        steer_by_cpu(&socks[0]).unwrap();
        for (cpu, want) in socks.iter().enumerate() {
            std::thread::scope(|s| {
                s.spawn(|| {
                    pin_to_cpu(cpu).unwrap();
                    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
                    for _ in 0..20 {
                        c.send_to(b"q", to).unwrap();
                    }
                });
            });
            want.set_nonblocking(false).unwrap();
            want.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            let mut got = 0;
            let mut buf = [0u8; 8];
            while got < 20 && want.recv_from(&mut buf).is_ok() {
                got += 1;
            }
            assert_eq!(got, 20, "socket {cpu} got {got} of what CPU {cpu} sent");
        }
    }
}
