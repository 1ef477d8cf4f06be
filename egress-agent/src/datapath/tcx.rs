//! TCX links (Linux 6.6+) made and changed with the bpf(2) commands
//! themselves, because the link's descriptor is what the state keeper holds
//! and what a restarted agent swaps its program into: a link lives while any
//! descriptor of it does, and BPF_LINK_UPDATE replaces its program in one
//! step, so no packet ever meets an empty hook.
use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

// linux/bpf.h
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_LINK_UPDATE: libc::c_long = 29;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_LINK_TYPE_TCX: u32 = 11;

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>() as u32) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret)
}

/// `bpf_attr.link_create`, with its `tcx` part.
#[repr(C)]
#[derive(Default)]
struct LinkCreate {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    relative_fd: u32,
    _pad: u32,
    expected_revision: u64,
}

/// Attaches `prog` to `ifindex`'s TCX ingress, last in the chain. Fails
/// with EINVAL on kernels without TCX (before 6.6).
pub fn attach_ingress(prog: BorrowedFd<'_>, ifindex: u32) -> io::Result<OwnedFd> {
    let mut attr = LinkCreate {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_TCX_INGRESS,
        ..Default::default()
    };
    let fd = bpf(BPF_LINK_CREATE, &mut attr)?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[repr(C)]
struct LinkUpdate {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

/// Replaces the program of `link` by `prog`, atomically.
pub fn replace_program(link: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = LinkUpdate {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: prog.as_raw_fd() as u32,
        flags: 0,
        old_prog_fd: 0,
    };
    bpf(BPF_LINK_UPDATE, &mut attr).map(|_| ())
}

/// Where a link is attached: (link type is TCX, ifindex, attach type).
#[repr(C)]
#[derive(Default)]
struct LinkInfo {
    link_type: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    tcx_ifindex: u32,
    tcx_attach_type: u32,
    _rest: [u64; 6],
}

#[repr(C)]
struct InfoByFd {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// A TCX ingress link as the kernel describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IngressLink {
    /// 0 once the device went away.
    pub ifindex: u32,
    /// The program attached through it.
    pub prog_id: u32,
}

/// What `link` is, if it is a TCX ingress link.
pub fn ingress_link(link: BorrowedFd<'_>) -> io::Result<Option<IngressLink>> {
    let mut info = LinkInfo::default();
    let mut attr = InfoByFd {
        bpf_fd: link.as_raw_fd() as u32,
        info_len: std::mem::size_of::<LinkInfo>() as u32,
        info: &mut info as *mut LinkInfo as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let is_tcx_ingress = info.link_type == BPF_LINK_TYPE_TCX && info.tcx_attach_type == BPF_TCX_INGRESS;
    Ok(is_tcx_ingress.then_some(IngressLink { ifindex: info.tcx_ifindex, prog_id: info.prog_id }))
}
