//! Register accesses in the image's code: every one is a fixed `mov`/`movzx` after the marker.
//!
//! `crates/storport/src/register.rs` makes each device-register access of the Windows build one
//! `asm!` instruction preceded by `storport::register::REGISTER_ACCESS_MARKER`, a 7-byte NOP no
//! compiler emits (`nop dword ptr [rax + 0x4F494D4D]`, "MMIO"). This module disassembles every
//! executable section (iced-x86: a maintained, table-driven x86 decoder, the same one the
//! simulator's MMIO emulation uses) and holds the image to that:
//!
//! - the instruction after each marker is one of the eight forms of [`Form`], with a plain
//!   `[register]` memory operand (no index, displacement, segment or RIP-relative address);
//! - every occurrence of the marker's bytes in a code section is a decoded marker instruction
//!   (the linear sweep stayed on instruction boundaries, so no access was skipped);
//! - a driver image has at least one register access (else it was not built from that module).
//!
//! The driver crate has no `unsafe` code and `RegisterWindow` keeps its base address private, so
//! the register module is the only code that can touch a register window; this check proves the
//! instructions it compiled to are the fixed forms, and the simulator's MMIO emulation refuses,
//! loudly, any access to a window from an instruction that is not after a marker.

use iced_x86::{Code, Decoder, DecoderOptions, Formatter, Instruction, IntelFormatter, Register};

/// The marker, as `crates/storport` emits it (held equal to it by this crate's tests).
pub const MARKER: [u8; 7] = [0x0f, 0x1f, 0x80, 0x4d, 0x4d, 0x49, 0x4f];

/// The marker's displacement: "MMIO" in little-endian bytes.
const MARKER_DISPLACEMENT: u64 = 0x4F49_4D4D;

/// One of the eight register-access instruction forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Form {
    /// `movzx r32, byte ptr [r64]`.
    Read8,
    /// `movzx r32, word ptr [r64]`.
    Read16,
    /// `mov r32, dword ptr [r64]`.
    Read32,
    /// `mov r64, qword ptr [r64]`.
    Read64,
    /// `mov byte ptr [r64], r8`.
    Write8,
    /// `mov word ptr [r64], r16`.
    Write16,
    /// `mov dword ptr [r64], r32`.
    Write32,
    /// `mov qword ptr [r64], r64`.
    Write64,
}

impl Form {
    /// All forms, reads first.
    pub const ALL: [Form; 8] = [
        Form::Read8,
        Form::Read16,
        Form::Read32,
        Form::Read64,
        Form::Write8,
        Form::Write16,
        Form::Write32,
        Form::Write64,
    ];

    /// The form of `instruction`, if it is one of the eight with a plain `[register]` operand.
    pub fn of(instruction: &Instruction) -> Option<Form> {
        let form = match instruction.code() {
            Code::Movzx_r32_rm8 => Form::Read8,
            Code::Movzx_r32_rm16 => Form::Read16,
            Code::Mov_r32_rm32 => Form::Read32,
            Code::Mov_r64_rm64 => Form::Read64,
            Code::Mov_rm8_r8 => Form::Write8,
            Code::Mov_rm16_r16 => Form::Write16,
            Code::Mov_rm32_r32 => Form::Write32,
            Code::Mov_rm64_r64 => Form::Write64,
            _ => return None,
        };
        let plain = instruction.memory_size() != iced_x86::MemorySize::Unknown
            && (Register::RAX as u32..=Register::R15 as u32)
                .contains(&(instruction.memory_base() as u32))
            && instruction.memory_index() == Register::None
            && instruction.memory_displacement64() == 0
            && instruction.segment_prefix() == Register::None;
        plain.then_some(form)
    }

    /// A short name (`read32`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Form::Read8 => "read8",
            Form::Read16 => "read16",
            Form::Read32 => "read32",
            Form::Read64 => "read64",
            Form::Write8 => "write8",
            Form::Write16 => "write16",
            Form::Write32 => "write32",
            Form::Write64 => "write64",
        }
    }
}

/// Whether `instruction` is the marker NOP.
pub fn is_marker(instruction: &Instruction) -> bool {
    instruction.code() == Code::Nop_rm32
        && instruction.memory_base() == Register::RAX
        && instruction.memory_index() == Register::None
        && instruction.memory_displacement64() == MARKER_DISPLACEMENT
        && instruction.len() == MARKER.len()
}

/// What the disassembly found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accesses {
    /// How many sites of each form, in [`Form::ALL`] order.
    pub counts: [usize; 8],
    /// One sentence per broken rule (empty when the code passes).
    pub problems: Vec<String>,
}

impl Accesses {
    /// Register-access sites in all.
    pub fn total(&self) -> usize {
        self.counts.iter().sum()
    }

    /// `read32 12, write32 9, ...` (forms that occur).
    pub fn summary(&self) -> String {
        let parts: Vec<String> = Form::ALL
            .iter()
            .zip(self.counts)
            .filter(|(_, n)| *n > 0)
            .map(|(form, n)| format!("{} {n}", form.name()))
            .collect();
        parts.join(", ")
    }
}

/// Disassembles `code`, loaded at virtual address `address`, and checks its register accesses.
pub fn scan(code: &[u8], address: u64) -> Accesses {
    let mut found = Accesses::default();
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut formatter = IntelFormatter::new();
    let mut text = String::new();
    let mut markers = 0usize;
    let mut after_marker: Option<u64> = None;
    let mut instruction = Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut instruction);
        if let Some(marker_at) = after_marker.take() {
            match Form::of(&instruction) {
                Some(form) => found.counts[form as usize] += 1,
                None => {
                    text.clear();
                    formatter.format(&instruction, &mut text);
                    found.problems.push(format!(
                        "the register access after the marker at {marker_at:#x} is `{text}` at \
                         {:#x}, not one of the fixed mov/movzx [reg] forms",
                        instruction.ip()
                    ));
                }
            }
        }
        if is_marker(&instruction) {
            markers += 1;
            after_marker = Some(instruction.ip());
        }
    }
    if let Some(marker_at) = after_marker {
        found.problems.push(format!(
            "the marker at {marker_at:#x} ends the code: no access follows it"
        ));
    }
    let raw = code.windows(MARKER.len()).filter(|w| *w == MARKER).count();
    if raw != markers {
        found.problems.push(format!(
            "the marker's bytes occur {raw} times but {markers} markers were decoded: the \
             disassembly left instruction boundaries, so some accesses were not checked"
        ));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eight_forms_after_markers_pass_and_are_counted() {
        let mut code = Vec::new();
        for access in [
            &[0x0f, 0xb6, 0x01][..],   // movzx eax, byte ptr [rcx]
            &[0x0f, 0xb7, 0x02],       // movzx eax, word ptr [rdx]
            &[0x41, 0x8b, 0x00],       // mov eax, dword ptr [r8]
            &[0x49, 0x8b, 0x04, 0x24], // mov rax, qword ptr [r12]
            &[0x88, 0x01],             // mov byte ptr [rcx], al
            &[0x66, 0x89, 0x45, 0x00], // mov word ptr [rbp], ax
            &[0x89, 0x01],             // mov dword ptr [rcx], eax
            &[0x48, 0x89, 0x01],       // mov qword ptr [rcx], rax
        ] {
            code.extend_from_slice(&MARKER);
            code.extend_from_slice(access);
        }
        code.push(0xc3);
        let found = scan(&code, 0x1000);
        assert_eq!(found.problems, Vec::<String>::new());
        assert_eq!(found.counts, [1; 8]);
        assert_eq!(found.total(), 8);
    }

    #[test]
    fn a_folded_compare_after_a_marker_is_named() {
        let mut code = MARKER.to_vec();
        code.extend_from_slice(&[0x83, 0x39, 0x00]); // cmp dword ptr [rcx], 0
        code.push(0xc3);
        let found = scan(&code, 0x1000);
        assert_eq!(found.problems.len(), 1, "{:?}", found.problems);
        assert!(
            found.problems[0].contains("cmp dword ptr [rcx],0")
                && found.problems[0].contains("0x1007"),
            "{}",
            found.problems[0]
        );
    }

    #[test]
    fn an_indexed_or_displaced_operand_is_not_a_fixed_form() {
        for access in [
            &[0x8b, 0x41, 0x04][..],   // mov eax, dword ptr [rcx+4]
            &[0x8b, 0x04, 0x91],       // mov eax, dword ptr [rcx+rdx*4]
            &[0x8b, 0x05, 0, 0, 0, 0], // mov eax, dword ptr [rip]
        ] {
            let mut code = MARKER.to_vec();
            code.extend_from_slice(access);
            assert_eq!(scan(&code, 0).problems.len(), 1, "{access:02x?}");
        }
    }

    #[test]
    fn a_marker_hidden_inside_another_instruction_is_found() {
        // mov rax, imm64 whose immediate holds the marker's bytes: decoded as one instruction.
        let mut code = vec![0x48, 0xb8];
        code.extend_from_slice(&MARKER);
        code.push(0);
        let found = scan(&code, 0);
        assert_eq!(found.problems.len(), 1, "{:?}", found.problems);
        assert!(found.problems[0].contains("occur 1 times but 0"));
    }

    #[test]
    fn the_marker_is_the_one_the_storport_crate_emits() {
        assert_eq!(MARKER, storport::register::REGISTER_ACCESS_MARKER);
    }
}
