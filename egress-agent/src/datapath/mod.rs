//! The kernel side, seen from userspace: loading and attaching the program
//! (`loader`), and typed access to its maps (`maps`), whether we loaded it
//! or found it already running (`status`).
pub mod conntrack;
pub mod gro_stage;
pub mod loader;
pub mod map_batch;
pub mod maps;
pub mod privileges;
pub mod sweeper;
mod sys_bpf;
pub mod tcx;
