//! The guest: a flat 64-bit image (identity-mapped page tables + five code snippets) that
//! every backend loads at guest physical address 0 and enters in long mode.
//!
//! The code is hand-assembled (a few dozen bytes; an assembler crate would be heavier than
//! the program). Every snippet ends its work with `out dx, al` on its own port, then `hlt`,
//! so the driver can tell from the exit which snippet finished and that it finished.
//! `out dx, al` (one byte, 0xEE) is used rather than `out imm8, al` because mshv reports the
//! exit at the instruction and the VMM advances RIP itself; rust-vmm/mshv's own guest test
//! does the same with `rip + 1` (rust-vmm/mshv@mshv-ioctls-v0.7.0
//! mshv-ioctls/src/ioctls/vcpu.rs:2021-2030,2125-2133).

/// Guest physical layout. Everything lives in the first 2 MiB ("main" region) except the
/// fresh pages of `memory-first-touch`, which are a second region mapped per repetition.
pub const PML4_GPA: u64 = 0x1000;
pub const PDPT_GPA: u64 = 0x2000;
pub const PD_GPA: u64 = 0x3000;
pub const CODE_GPA: u64 = 0x8000;
/// Size of the main region (one 2 MiB page of the identity map).
pub const MAIN_SIZE: usize = 0x20_0000;
/// Where the first-touch pages are mapped (the second 2 MiB page of the identity map).
pub const SCRATCH_GPA: u64 = 0x20_0000;
/// At most this many 4 KiB pages fit the scratch 2 MiB page.
pub const MAX_SCRATCH_PAGES: u64 = 512;
pub const PAGE_SIZE: u64 = 0x1000;

/// `CR0`: PE | MP | ET | NE | WP | PG (protected mode with paging, as long mode requires).
pub const CR0: u64 = 0x8005_0033;
/// `CR4`: PAE (long mode requires it).
pub const CR4: u64 = 1 << 5;
/// `EFER`: LME | LMA.
pub const EFER: u64 = 0x500;

/// One code snippet: where it starts and the port its final `out` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snippet {
    pub entry: u64,
    pub port: u16,
}

/// `exit-to-vmm`: `RCX` times `out dx, al` on port 0x10 (each exits to the VMM), then `hlt`.
pub const EXIT_TO_VMM: Snippet = Snippet {
    entry: CODE_GPA,
    port: 0x10,
};
/// `exit-in-hypervisor`: `RCX` times `cpuid` (leaf 0; handled in the kernel/hypervisor,
/// never by this process), then one `out` on port 0x11, then `hlt`.
pub const EXIT_IN_HYPERVISOR: Snippet = Snippet {
    entry: CODE_GPA + 0x100,
    port: 0x11,
};
/// `guest-compute`: `RCX` iterations of `dec rcx; jnz` (no exits), then `out` on 0x12.
pub const GUEST_COMPUTE: Snippet = Snippet {
    entry: CODE_GPA + 0x200,
    port: 0x12,
};
/// `memory-first-touch`: one byte written to each of `RCX` consecutive pages from
/// `SCRATCH_GPA`, then `out` on 0x13.
pub const FIRST_TOUCH: Snippet = Snippet {
    entry: CODE_GPA + 0x300,
    port: 0x13,
};

#[rustfmt::skip]
const EXIT_TO_VMM_CODE: &[u8] = &[
    0x66, 0xBA, 0x10, 0x00, //     mov dx, 0x10
    0xEE,                   // 1:  out dx, al
    0x48, 0xFF, 0xC9,       //     dec rcx
    0x75, 0xFA,             //     jnz 1b
    0xF4,                   //     hlt
];

#[rustfmt::skip]
const EXIT_IN_HYPERVISOR_CODE: &[u8] = &[
    0x49, 0x89, 0xC8,       //     mov r8, rcx   (cpuid clobbers rax, rbx, rcx, rdx)
    0x31, 0xC0,             // 1:  xor eax, eax
    0x0F, 0xA2,             //     cpuid
    0x49, 0xFF, 0xC8,       //     dec r8
    0x75, 0xF7,             //     jnz 1b
    0x66, 0xBA, 0x11, 0x00, //     mov dx, 0x11
    0xEE,                   //     out dx, al
    0xF4,                   //     hlt
];

#[rustfmt::skip]
const GUEST_COMPUTE_CODE: &[u8] = &[
    0x48, 0xFF, 0xC9,       // 1:  dec rcx
    0x75, 0xFB,             //     jnz 1b
    0x66, 0xBA, 0x12, 0x00, //     mov dx, 0x12
    0xEE,                   //     out dx, al
    0xF4,                   //     hlt
];

#[rustfmt::skip]
const FIRST_TOUCH_CODE: &[u8] = &[
    0x48, 0xBF, 0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, // movabs rdi, 0x200000
    0x88, 0x07,                                                 // 1: mov [rdi], al
    0x48, 0x81, 0xC7, 0x00, 0x10, 0x00, 0x00,                   //    add rdi, 0x1000
    0x48, 0xFF, 0xC9,                                           //    dec rcx
    0x75, 0xF2,                                                 //    jnz 1b
    0x66, 0xBA, 0x13, 0x00,                                     //    mov dx, 0x13
    0xEE,                                                       //    out dx, al
    0xF4,                                                       //    hlt
];

/// Page-table entry bits: present | writable, and PS (a 2 MiB page) in the PD.
const PTE_PW: u64 = 0x3;
const PDE_2M: u64 = 0x83;

/// The bytes to copy into the main region at offset 0 (length < `MAIN_SIZE`).
pub fn image() -> Vec<u8> {
    let len = usize::try_from(CODE_GPA).unwrap_or(0) + 0x400;
    let mut img = vec![0u8; len];
    put_u64(&mut img, PML4_GPA, PDPT_GPA | PTE_PW);
    put_u64(&mut img, PDPT_GPA, PD_GPA | PTE_PW);
    // 0..2 MiB (page tables, code) and 2..4 MiB (the first-touch pages).
    put_u64(&mut img, PD_GPA, PDE_2M);
    put_u64(&mut img, PD_GPA + 8, SCRATCH_GPA | PDE_2M);
    for (snippet, code) in [
        (EXIT_TO_VMM, EXIT_TO_VMM_CODE),
        (EXIT_IN_HYPERVISOR, EXIT_IN_HYPERVISOR_CODE),
        (GUEST_COMPUTE, GUEST_COMPUTE_CODE),
        (FIRST_TOUCH, FIRST_TOUCH_CODE),
    ] {
        let at = offset(snippet.entry);
        img[at..at + code.len()].copy_from_slice(code);
    }
    img
}

fn offset(gpa: u64) -> usize {
    usize::try_from(gpa).unwrap_or(usize::MAX)
}

fn put_u64(img: &mut [u8], gpa: u64, value: u64) {
    let at = offset(gpa);
    img[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The relative jumps land on the loop heads written in the comments.
    #[test]
    fn loops_jump_back_to_their_heads() {
        // (code, offset of the jnz opcode, offset of the loop head)
        for (code, jnz, head) in [
            (EXIT_TO_VMM_CODE, 8usize, 4usize),
            (EXIT_IN_HYPERVISOR_CODE, 10, 3),
            (GUEST_COMPUTE_CODE, 3, 0),
            (FIRST_TOUCH_CODE, 22, 10),
        ] {
            assert_eq!(code[jnz], 0x75);
            let rel = i64::from(code[jnz + 1] as i8);
            assert_eq!(jnz as i64 + 2 + rel, head as i64);
            assert_eq!(code.last(), Some(&0xF4), "ends in hlt");
        }
    }

    #[test]
    fn image_holds_tables_and_code_and_ports_match() {
        let img = image();
        assert!(img.len() < MAIN_SIZE);
        assert_eq!(
            &img[offset(PML4_GPA)..offset(PML4_GPA) + 8],
            &(PDPT_GPA | 3).to_le_bytes()
        );
        assert_eq!(
            &img[offset(PD_GPA + 8)..offset(PD_GPA + 16)],
            &(SCRATCH_GPA | 0x83).to_le_bytes()
        );
        for (s, code) in [
            (EXIT_TO_VMM, EXIT_TO_VMM_CODE),
            (EXIT_IN_HYPERVISOR, EXIT_IN_HYPERVISOR_CODE),
            (GUEST_COMPUTE, GUEST_COMPUTE_CODE),
            (FIRST_TOUCH, FIRST_TOUCH_CODE),
        ] {
            assert_eq!(&img[offset(s.entry)..offset(s.entry) + code.len()], code);
            // The `mov dx, imm16` before the final out names the snippet's port.
            let port = s.port.to_le_bytes();
            assert!(code.windows(4).any(|w| w == [0x66, 0xBA, port[0], port[1]]));
        }
        assert_eq!(&FIRST_TOUCH_CODE[2..10], &SCRATCH_GPA.to_le_bytes());
    }
}
