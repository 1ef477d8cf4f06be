//! How much work the kernel's verifier does to accept the classifier: the
//! instructions it walked across all paths (`verified_insns`). Its limit
//! is one million per program; a path added for IPv6 multiplies states,
//! and this is where the growth shows before a kernel refuses the program.
mod common;

use common::Harness;

/// Four fifths of the kernel's limit (BPF_COMPLEXITY_LIMIT_INSNS,
/// 1,000,000). The IPv4 classifier alone takes about 717,000 on 6.18, so
/// IPv6 goes into a program of its own, reached by a tail call, rather
/// than into this one; this test says when that rule was forgotten.
const BUDGET: u32 = 800_000;

#[test]
fn the_verifier_accepts_the_classifier_well_inside_its_limit() {
    let mut h = Harness::default();
    let info = h.datapath.program().unwrap().info().expect("reading the loaded program's info");
    let Some(walked) = info.verified_instruction_count() else {
        println!("SKIPPED: this kernel does not report verified_insns (Linux 5.16 added it)");
        return;
    };
    println!("egress_gateway: the verifier walked {walked} instructions (budget {BUDGET})");
    assert!(walked > 0);
    assert!(walked < BUDGET, "the verifier walked {walked} instructions, over the budget of {BUDGET}");
}
