//! The system-call filter every instance runs under: what Docker's default profile refuses
//! that an application has no business calling (mounting, namespaces, tracing other
//! processes, kernel modules and keyrings, clocks, reboot, the new mount API), answered
//! with `EPERM`, and `clone3` with `ENOSYS` so that libc falls back to `clone`, whose
//! namespace flags are then refused. Other architectures' calls (x32) are refused too.
//!
//! A deny list, not Docker's allow list: it blocks what breaks isolation while any program
//! a user brings keeps working.

/// `struct sock_filter` of the kernel's classic BPF.
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;

/// `offsetof(struct seccomp_data, ...)`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARG0_LOW: u32 = 16;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

/// x32 system calls on x86_64 carry this bit.
const X32_BIT: u32 = 0x4000_0000;

/// Namespace flags a `clone` may not ask for.
const CLONE_NEW: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u32;

/// Refused with `EPERM`.
const DENIED: &[libc::c_long] = &[
    libc::SYS_acct,
    libc::SYS_add_key,
    libc::SYS_bpf,
    libc::SYS_clock_adjtime,
    libc::SYS_clock_settime,
    libc::SYS_delete_module,
    libc::SYS_finit_module,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fsopen,
    libc::SYS_fspick,
    libc::SYS_init_module,
    libc::SYS_kcmp,
    libc::SYS_kexec_file_load,
    libc::SYS_kexec_load,
    libc::SYS_keyctl,
    libc::SYS_mount,
    libc::SYS_mount_setattr,
    libc::SYS_move_mount,
    libc::SYS_name_to_handle_at,
    libc::SYS_open_by_handle_at,
    libc::SYS_open_tree,
    libc::SYS_perf_event_open,
    libc::SYS_pidfd_getfd,
    libc::SYS_pivot_root,
    libc::SYS_process_madvise,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_ptrace,
    libc::SYS_quotactl,
    libc::SYS_reboot,
    libc::SYS_request_key,
    libc::SYS_setdomainname,
    libc::SYS_sethostname,
    libc::SYS_setns,
    libc::SYS_settimeofday,
    libc::SYS_swapoff,
    libc::SYS_swapon,
    libc::SYS_syslog,
    libc::SYS_umount2,
    libc::SYS_unshare,
    libc::SYS_userfaultfd,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
];

/// The filter program, built once before `fork` (nothing is allocated after it).
pub struct Filter(Vec<Insn>);

impl Filter {
    /// The instance filter.
    pub fn instances() -> Filter {
        let ret = |k| Insn {
            code: RET_K,
            jt: 0,
            jf: 0,
            k,
        };
        let ld = |k| Insn {
            code: LD_W_ABS,
            jt: 0,
            jf: 0,
            k,
        };
        let eperm = RET_ERRNO | libc::EPERM as u32;
        let mut p = vec![
            ld(OFF_ARCH),
            // Another architecture's calling convention: kill (its numbers mean other calls).
            Insn {
                code: JEQ_K,
                jt: 1,
                jf: 0,
                k: AUDIT_ARCH,
            },
            ret(RET_KILL_PROCESS),
            ld(OFF_NR),
            Insn {
                code: JGE_K,
                jt: 0,
                jf: 1,
                k: X32_BIT,
            },
            ret(eperm),
        ];
        // clone3 passes its flags in memory the filter cannot read: ENOSYS makes libc use
        // clone, whose flags it can.
        p.push(Insn {
            code: JEQ_K,
            jt: 0,
            jf: 1,
            k: libc::SYS_clone3 as u32,
        });
        p.push(ret(RET_ERRNO | libc::ENOSYS as u32));
        // clone with a namespace flag (the flags are argument 0 on x86_64 and aarch64).
        p.push(Insn {
            code: JEQ_K,
            jt: 0,
            jf: 3,
            k: libc::SYS_clone as u32,
        });
        p.push(ld(OFF_ARG0_LOW));
        p.push(Insn {
            code: JSET_K,
            jt: 0,
            jf: 1,
            k: CLONE_NEW,
        });
        p.push(ret(eperm));
        // The argument was loaded over the number: load it again for the list.
        p.push(ld(OFF_NR));
        for nr in DENIED {
            p.push(Insn {
                code: JEQ_K,
                jt: 0,
                jf: 1,
                k: *nr as u32,
            });
            p.push(ret(eperm));
        }
        p.push(ret(RET_ALLOW));
        Filter(p)
    }

    /// Installs the filter on the calling thread; `no_new_privs` must be set first. Only
    /// system calls: safe between `fork` and `exec`.
    pub(crate) fn install(&self) -> std::io::Result<()> {
        #[repr(C)]
        struct Prog {
            len: u16,
            filter: *const Insn,
        }
        let prog = Prog {
            len: self.0.len() as u16,
            filter: self.0.as_ptr(),
        };
        // SAFETY: `prog` points at `self.0`, which outlives the call; the kernel copies the
        // program and validates it.
        let r = unsafe {
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                &prog as *const Prog as libc::c_ulong,
                0,
                0,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_fits_the_kernels_limits_and_ends_in_a_return() {
        let f = Filter::instances();
        assert!(f.0.len() < 4096);
        assert_eq!(f.0.last().unwrap().code, RET_K);
        // Every jump lands inside the program.
        for (i, insn) in f.0.iter().enumerate() {
            if insn.code & 0x07 == 0x05 {
                assert!(i + 1 + (insn.jt.max(insn.jf) as usize) < f.0.len());
            }
        }
    }
}
