//! Gratuitous ARP: when an address moves to a new interface (a database's writer endpoint
//! to a new node, a replacement instance given a dead one's address), neighbours (the VPC
//! router, balancers and clients on the subnet) learn its new hardware address at once
//! instead of sending to the old one until their caches expire.

use std::net::Ipv4Addr;

/// Announces `ip` on `eth0` of network namespace `ns`, three times.
pub fn announce(ns: &str, ip: Ipv4Addr) -> std::io::Result<()> {
    crate::netns::in_netns(ns, move || send(ip))?
}

fn send(ip: Ipv4Addr) -> std::io::Result<()> {
    const ETH_P_ARP: u16 = 0x0806;
    let last = || std::io::Error::last_os_error();
    // SAFETY: plain socket calls on a descriptor this function owns and closes; every
    // buffer passed is a live local of the size given.
    unsafe {
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            i32::from(ETH_P_ARP.to_be()),
        );
        if fd < 0 {
            return Err(last());
        }
        let close = |r: std::io::Result<()>| {
            libc::close(fd);
            r
        };
        let ifindex = libc::if_nametoindex(c"eth0".as_ptr());
        if ifindex == 0 {
            return close(Err(last()));
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (d, s) in req.ifr_name.iter_mut().zip(b"eth0\0") {
            *d = *s as libc::c_char;
        }
        if libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut req) != 0 {
            return close(Err(last()));
        }
        let hw = req.ifr_ifru.ifru_hwaddr.sa_data;
        let mac: [u8; 6] = std::array::from_fn(|i| hw[i] as u8);
        let mut frame = Vec::with_capacity(42);
        frame.extend([0xff; 6]);
        frame.extend(mac);
        frame.extend(ETH_P_ARP.to_be_bytes());
        frame.extend([0, 1, 8, 0, 6, 4, 0, 1]); // Ethernet, IPv4, request
        frame.extend(mac);
        frame.extend(ip.octets());
        frame.extend([0; 6]);
        frame.extend(ip.octets());
        let mut to: libc::sockaddr_ll = std::mem::zeroed();
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_protocol = ETH_P_ARP.to_be();
        to.sll_ifindex = ifindex as i32;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        for _ in 0..3 {
            let n = libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&to as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            if n < 0 {
                return close(Err(last()));
            }
        }
        close(Ok(()))
    }
}
