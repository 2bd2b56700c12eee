//! What an administrator sets in the registry: REG_DWORD values under
//! `HKLM\SYSTEM\CurrentControlSet\Services\vioblk\Parameters\Device`, read once in
//! HwStorFindAdapter with StorPortRegistryRead (`inf/vioblk.inx` writes the defaults).
//!
//! A value out of its range is clamped to the nearest bound, and the clamp is written to the
//! system event log (TUNABLE_CLAMPED, the unique id naming the tunable) and the debugger; a value
//! that is not set (or not a DWORD) takes its default. A crash-dump or hibernation stack reads
//! nothing (its HwStorFindAdapter runs at HIGH_LEVEL): it takes PackedRing and MaxTransferKB from
//! the running instance, through the private data of its answer to SRB_FUNCTION_DUMP_POINTERS
//! ([`Tunables::dump_data`]), and the defaults for the rest (or for all, without that data).

use core::ffi::CStr;

use storport::{Port, PortConfiguration};

use super::events;

/// One tunable: its registry name, range and default, and its unique id in the event log.
struct Tunable {
    name: &'static CStr,
    min: u32,
    max: u32,
    default: u32,
    id: u32,
}

/// `NumberOfQueues`: request queues at most (each takes one MSI-X message).
const QUEUES: Tunable = Tunable {
    name: c"NumberOfQueues",
    min: 1,
    max: super::MAX_QUEUES_U16 as u32,
    default: super::MAX_QUEUES_U16 as u32,
    id: 1,
};
const _: () = assert!(QUEUES.default == super::MAX_QUEUES_U16 as u32);
/// `QueueDepth`: requests Storport may have outstanding on the disk (its per-LU queue depth).
const QUEUE_DEPTH: Tunable = Tunable {
    name: c"QueueDepth",
    min: 1,
    max: super::MAX_QUEUES_U16 as u32 * super::SLOTS_U16 as u32,
    default: super::MAX_QUEUES_U16 as u32 * super::SLOTS_U16 as u32,
    id: 2,
};
/// `MaxTransferKB`: the largest request, in KiB (the device's limits may lower it further).
const MAX_TRANSFER_KB: Tunable = Tunable {
    name: c"MaxTransferKB",
    min: 4,
    max: 1024,
    default: 1024,
    id: 3,
};
/// `PackedRing`: 1 takes packed virtqueues when the device offers them, 0 refuses them.
const PACKED_RING: Tunable = Tunable {
    name: c"PackedRing",
    min: 0,
    max: 1,
    default: 1,
    id: 4,
};
/// `MsiX`: 1 uses one MSI-X message per queue, 0 one interrupt for everything (one queue).
const MSIX: Tunable = Tunable {
    name: c"MsiX",
    min: 0,
    max: 1,
    default: 1,
    id: 5,
};
/// `ResetTimeoutMs`: how long a device may take to acknowledge a reset before its DMA is cut.
const RESET_TIMEOUT_MS: Tunable = Tunable {
    name: c"ResetTimeoutMs",
    min: 10,
    max: 10_000,
    default: super::reset::ACK_POLLS,
    id: 6,
};

/// The tunables in force for one adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tunables {
    /// Request queues at most.
    pub queues: u16,
    /// Per-LU queue depth at most.
    pub queue_depth: u32,
    /// Largest request in bytes.
    pub max_transfer: u32,
    /// Take packed virtqueues when offered.
    pub packed: bool,
    /// Use one MSI-X message per queue.
    pub msix: bool,
    /// Reset acknowledgement wait, in milliseconds (= polls of the reset machine, 1 ms apart).
    pub reset_timeout_ms: u32,
}

impl Tunables {
    /// Every tunable at its default.
    pub const DEFAULT: Tunables = Tunables {
        queues: super::MAX_QUEUES_U16,
        queue_depth: QUEUE_DEPTH.default,
        max_transfer: MAX_TRANSFER_KB.default * 1024,
        packed: PACKED_RING.default != 0,
        msix: MSIX.default != 0,
        reset_timeout_ms: RESET_TIMEOUT_MS.default,
    };

    /// Reads every tunable (HwStorFindAdapter), clamping and logging bad values.
    pub(super) fn read(config: &PortConfiguration<'_>, port: Port) -> Tunables {
        let get = |t: &Tunable| read_one(config, port, t);
        let queues = get(&QUEUES);
        Tunables {
            queues: u16::try_from(queues).unwrap_or(super::MAX_QUEUES_U16),
            queue_depth: get(&QUEUE_DEPTH),
            max_transfer: get(&MAX_TRANSFER_KB).saturating_mul(1024),
            packed: get(&PACKED_RING) != 0,
            msix: get(&MSIX) != 0,
            reset_timeout_ms: get(&RESET_TIMEOUT_MS),
        }
    }
}

/// The version of the words [`Tunables::dump_data`] writes.
const DUMP_DATA_VERSION: u32 = 1;

impl Tunables {
    /// The tunables a dump instance of this adapter needs, as the private data of the answer to
    /// SRB_FUNCTION_DUMP_POINTERS: version, PackedRing, MaxTransferKB (in bytes).
    pub(super) fn dump_data(&self) -> [u32; storport::dump::DUMP_DATA_WORDS] {
        let mut data = [0; storport::dump::DUMP_DATA_WORDS];
        data[0] = DUMP_DATA_VERSION;
        data[1] = u32::from(self.packed);
        data[2] = self.max_transfer;
        data
    }

    /// These tunables with what the running instance handed over ([`Tunables::dump_data`]);
    /// unchanged when the version is another, each value kept within its range.
    pub(super) fn with_dump_data(self, data: &[u32; storport::dump::DUMP_DATA_WORDS]) -> Tunables {
        match *data {
            [DUMP_DATA_VERSION, packed, max_transfer, ..] => Tunables {
                packed: packed != 0,
                max_transfer: max_transfer
                    .clamp(MAX_TRANSFER_KB.min * 1024, MAX_TRANSFER_KB.max * 1024),
                ..self
            },
            _ => self,
        }
    }
}

fn read_one(config: &PortConfiguration<'_>, port: Port, tunable: &Tunable) -> u32 {
    let Some(value) = config.registry_dword(tunable.name) else {
        return tunable.default;
    };
    let clamped = value.clamp(tunable.min, tunable.max);
    if clamped != value {
        port.log_error(None, events::TUNABLE_CLAMPED, tunable.id);
        let mut line = [0u8; 96];
        let mut len = 0;
        for part in [
            b"vioblk: registry value ".as_slice(),
            tunable.name.to_bytes(),
            b" out of range, clamped".as_slice(),
        ] {
            for &byte in part {
                if let Some(slot) = line.get_mut(len) {
                    *slot = byte;
                    // `line` holds 96 bytes: len < 96 here.
                    len = len.saturating_add(1);
                }
            }
        }
        if let Some(text) = line.get(..len).and_then(|b| core::str::from_utf8(b).ok()) {
            port.debug_print(1, text);
        }
    }
    clamped
}

/// Every tunable: what the INF documents.
#[cfg(test)]
const ALL: [&Tunable; 6] = [
    &QUEUES,
    &QUEUE_DEPTH,
    &MAX_TRANSFER_KB,
    &PACKED_RING,
    &MSIX,
    &RESET_TIMEOUT_MS,
];

#[cfg(test)]
mod tests {
    #![allow(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::arithmetic_side_effects,
        clippy::cast_possible_truncation,
        clippy::panic,
        reason = "tests index fixed buffers and fail by panicking"
    )]

    extern crate std;
    use std::borrow::ToOwned;
    use std::format;
    use std::string::String;
    use std::vec::Vec;

    use super::*;

    /// `HKR, "Parameters\Device", "Name", %REG_DWORD%, value` lines of the INF template.
    fn inf_defaults(inx: &str) -> Vec<(String, u32)> {
        inx.lines()
            .filter(|l| !l.trim_start().starts_with(';'))
            .filter_map(|l| {
                let fields: Vec<&str> = l.split(',').map(str::trim).collect();
                match fields.as_slice() {
                    ["HKR", "\"Parameters\\Device\"", name, "%REG_DWORD%", value] => Some((
                        name.trim_matches('"').to_owned(),
                        value.parse().expect("a decimal default"),
                    )),
                    _ => None,
                }
            })
            .collect()
    }

    /// The INF writes every tunable the driver reads, with the driver's default, and nothing else
    /// under Parameters\Device; the comment table in the INF names each range and id.
    #[test]
    fn the_inf_documents_every_tunable_and_its_default() {
        let inx = include_str!("../../inf/vioblk.inx");
        let inf = inf_defaults(inx);
        let driver: Vec<(String, u32)> = ALL
            .iter()
            .map(|t| (t.name.to_str().unwrap().to_owned(), t.default))
            .collect();
        assert_eq!(inf, driver);
        for t in ALL {
            let name = t.name.to_str().unwrap();
            let row = format!("{}..{}", t.min, t.max);
            assert!(
                inx.lines().any(|l| l.contains(name)
                    && l.contains(&row)
                    && l.contains(&format!("(id {})", t.id))),
                "the INF comment gives {name}'s range {row} and id {}",
                t.id
            );
        }
    }

    #[test]
    fn the_parser_sees_a_wrong_default() {
        let inx = "HKR, \"Parameters\\Device\", \"MsiX\", %REG_DWORD%, 0\n";
        assert_eq!(inf_defaults(inx), [("MsiX".to_owned(), 0)]);
        assert_ne!(inf_defaults(inx), [("MsiX".to_owned(), MSIX.default)]);
    }

    /// What the running instance hands its dump instance comes back as it was; another version
    /// changes nothing, and a value out of range is clamped.
    #[test]
    fn dump_data_carries_packed_ring_and_max_transfer() {
        let running = Tunables {
            packed: false,
            max_transfer: 16 * 1024,
            ..Tunables::DEFAULT
        };
        let dump = Tunables::DEFAULT.with_dump_data(&running.dump_data());
        assert_eq!((dump.packed, dump.max_transfer), (false, 16 * 1024));
        assert_eq!(dump.queues, Tunables::DEFAULT.queues);
        let mut other = running.dump_data();
        other[0] = 2;
        assert_eq!(Tunables::DEFAULT.with_dump_data(&other), Tunables::DEFAULT);
        let mut wild = running.dump_data();
        wild[2] = u32::MAX;
        assert_eq!(
            Tunables::DEFAULT.with_dump_data(&wild).max_transfer,
            MAX_TRANSFER_KB.max * 1024
        );
    }

    #[test]
    fn defaults_are_in_range_and_ids_distinct() {
        let mut ids: Vec<u32> = ALL.iter().map(|t| t.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), ALL.len());
        for t in ALL {
            assert!((t.min..=t.max).contains(&t.default));
        }
    }
}
