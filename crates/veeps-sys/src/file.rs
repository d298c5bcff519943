//! Positional reads into memory that need not be zeroed first.

use std::os::fd::AsRawFd;

/// Appends exactly `len` bytes of `file` read at `offset` to `buf`, writing into its spare
/// capacity (no zeroing of memory about to be written over). On error or a file shorter
/// than asked, `buf` keeps its previous length and contents.
pub fn read_exact_at_append(
    file: &std::fs::File,
    buf: &mut Vec<u8>,
    len: usize,
    offset: u64,
) -> std::io::Result<()> {
    buf.reserve(len);
    let start = buf.len();
    let mut done = 0usize;
    while done < len {
        let at = offset
            .checked_add(done as u64)
            .and_then(|o| libc::off_t::try_from(o).ok())
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        let spare = buf.spare_capacity_mut();
        // SAFETY: the pointer and length lie inside `buf`'s spare capacity, reserved above
        // for `len` bytes past `start`; pread writes at most `len - done` bytes there and
        // nothing reads them before `set_len` below covers only what was written.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                spare[done..].as_mut_ptr().cast(),
                len - done,
                at,
            )
        };
        match n {
            n if n < 0 => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => done += n as usize,
        }
    }
    // SAFETY: the `len` bytes after `start` were written by pread above.
    unsafe { buf.set_len(start + len) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn appends_what_lies_at_the_offset_and_nothing_on_a_short_file() {
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        f.write_all(&data).unwrap();
        let mut buf = b"head".to_vec();
        read_exact_at_append(&f, &mut buf, 5000, 1234).unwrap();
        assert_eq!(&buf[..4], b"head");
        assert_eq!(&buf[4..], &data[1234..6234]);
        // Past the end: an error, and the buffer as it was.
        let e = read_exact_at_append(&f, &mut buf, 100, 9950).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        assert_eq!(buf.len(), 5004);
        read_exact_at_append(&f, &mut buf, 0, 99_999).unwrap();
        assert_eq!(buf.len(), 5004);
    }
}
