//! The raw `bpf(2)` call, for the commands aya has no wrapper for
//! (`BPF_MAP_LOOKUP_AND_DELETE_ELEM` on hash maps, `BPF_MAP_LOOKUP_BATCH`).

/// `bpf(cmd, attr, sizeof attr)`; the error is errno's.
///
/// # Safety
/// `attr` must be the `union bpf_attr` member `cmd` reads, and every
/// pointer in it must point to memory the kernel may read or write as that
/// command does (keys, values, batch tokens of the map's sizes).
pub unsafe fn bpf<A>(cmd: libc::c_long, attr: &mut A) -> std::io::Result<()> {
    // SAFETY: the caller's contract above.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut A, std::mem::size_of::<A>() as u32) };
    if ret == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
