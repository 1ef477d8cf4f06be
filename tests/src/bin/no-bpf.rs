//! Runs a command under a seccomp filter that refuses bpf(2) with EPERM,
//! as the default profiles of CRI-O, podman and containerd before 1.7 do
//! for a process without CAP_SYS_ADMIN: the gateway's tests show the
//! agent naming that cause instead of blaming its capabilities.
//!
//! Usage: `no-bpf COMMAND [ARG]...` (the filter needs no-new-privs, which
//! this sets, or CAP_SYS_ADMIN).
use std::os::unix::process::CommandExt;
use std::process::{exit, Command};

/// x86_64's and aarch64's bpf(2) numbers.
#[cfg(target_arch = "x86_64")]
const SYS_BPF: u32 = 321;
#[cfg(target_arch = "aarch64")]
const SYS_BPF: u32 = 280;

// Classic BPF opcodes and seccomp return values (linux/filter.h, seccomp.h).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
/// `offsetof(struct seccomp_data, nr)`.
const SECCOMP_DATA_NR: u32 = 0;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(command) = args.next() else {
        eprintln!("usage: no-bpf COMMAND [ARG]...");
        exit(2);
    };
    let filter = [
        libc::sock_filter { code: BPF_LD_W_ABS, jt: 0, jf: 0, k: SECCOMP_DATA_NR },
        libc::sock_filter { code: BPF_JEQ_K, jt: 0, jf: 1, k: SYS_BPF },
        libc::sock_filter { code: BPF_RET_K, jt: 0, jf: 0, k: SECCOMP_RET_ERRNO | libc::EPERM as u32 },
        libc::sock_filter { code: BPF_RET_K, jt: 0, jf: 0, k: SECCOMP_RET_ALLOW },
    ];
    let program = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr() as *mut _ };
    // SAFETY: prctl with a filter that outlives the call; the kernel copies it.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &program as *const _) != 0
        {
            eprintln!("no-bpf: installing the seccomp filter: {}", std::io::Error::last_os_error());
            exit(1);
        }
    }
    let err = Command::new(&command).args(args).exec();
    eprintln!("no-bpf: running {command}: {err}");
    exit(1);
}
