//! How much work the kernel's verifier does to accept the classifier: the
//! instructions it walked across all paths (`verified_insns`). Its limit
//! is one million per program; a path added for IPv6 multiplies states,
//! and this is where the growth shows before a kernel refuses the program.
mod common;

use common::Harness;
use egress_common::maps::{GRO_STAGE_PROGRAM, IPV6_PROGRAM_SLOTS, PROGRAM, RESEGMENT_PROGRAM};

/// Four fifths of the kernel's limit (BPF_COMPLEXITY_LIMIT_INSNS,
/// 1,000,000). The IPv4 classifier alone takes about 431,000 on 6.18, so
/// IPv6 goes into a program of its own, reached by a tail call, rather
/// than into this one; this test says when that rule was forgotten.
const BUDGET: u32 = 800_000;

/// Every program the agent loads: the two that hold the IPv4 paths
/// (`egress_resegmented` runs the same `classify`), the IPv6 ones and the
/// GRO stage's.
#[test]
fn the_verifier_accepts_every_classifier_well_inside_its_limit() {
    let mut h = Harness::default();
    let ipv6 = IPV6_PROGRAM_SLOTS.iter().map(|(name, _)| *name);
    for name in [PROGRAM, RESEGMENT_PROGRAM].into_iter().chain(ipv6).chain([GRO_STAGE_PROGRAM]) {
        let program = h.datapath.classifier(name).unwrap();
        let info = program.info().unwrap_or_else(|e| panic!("reading {name}'s info: {e}"));
        let Some(walked) = info.verified_instruction_count() else {
            println!("SKIPPED: this kernel does not report verified_insns (Linux 5.16 added it)");
            return;
        };
        println!("{name}: the verifier walked {walked} instructions (budget {BUDGET})");
        assert!(walked > 0, "{name}");
        assert!(
            walked < BUDGET,
            "{name}: the verifier walked {walked} instructions, over the budget of {BUDGET}"
        );
    }
}
