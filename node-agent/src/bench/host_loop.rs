//! The host half of `guest-compute`: the guest's `dec; jnz` loop, run natively.
#![allow(unsafe_code)]

/// Run `1: dec rcx; jnz 1b` with `rcx = n` on this CPU (the same two instructions the guest
/// runs, so the ratio compares like with like; a Rust loop would be optimised away).
pub fn dec_jnz(n: u64) {
    if n == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the asm only decrements the register it is given and branches within itself;
    // it touches no memory and no stack (`nomem, nostack`), and rcx is declared clobbered.
    unsafe {
        core::arch::asm!(
            "2:",
            "dec rcx",
            "jnz 2b",
            inout("rcx") n => _,
            options(nomem, nostack),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut i = n;
        while std::hint::black_box(i) > 0 {
            i -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn runs_and_returns() {
        super::dec_jnz(0);
        super::dec_jnz(1);
        super::dec_jnz(10_000);
    }
}
