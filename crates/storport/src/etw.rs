//! ETW events a miniport publishes through Storport (StorPortEtwEvent2).
//!
//! `StorPortEtwEvent2` is an inline wrapper over `StorPortExtendedFunction(
//! ExtFunctionMiniportEtwEvent2, ...)` (storport.h, Windows 8.1 and later): the adapter, an
//! optional unit address, a miniport-defined event id, a UTF-16 description, keywords, level,
//! opcode, an optional SRB and two named 64-bit parameters. Storport answers
//! STOR_STATUS_NOT_IMPLEMENTED where it has no ETW support; the event is then lost, which is what
//! a trace is allowed to do. Strings are [`Text`]: NUL-terminated UTF-16 built at compile time.

use crate::ffi;
use crate::port::Port;
use crate::srb::{Address, Srb};

/// A NUL-terminated UTF-16 string of `N` code units (the NUL included), made from ASCII at
/// compile time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Text<const N: usize>([u16; N]);

impl<const N: usize> Text<N> {
    /// `text` in UTF-16 with its NUL; a compile-time error unless `text` is ASCII, without NUL,
    /// and `N` is its length plus one.
    pub const fn new(text: &str) -> Self {
        let bytes = text.as_bytes();
        assert!(bytes.len() + 1 == N, "N is the text's length plus its NUL");
        let mut out = [0u16; N];
        let mut i = 0;
        while i < bytes.len() {
            assert!(
                bytes[i].is_ascii() && bytes[i] != 0,
                "ASCII text without NUL"
            );
            out[i] = bytes[i] as u16;
            i += 1;
        }
        Self(out)
    }

    fn as_ptr(&self) -> *const u16 {
        self.0.as_ptr()
    }
}

/// How important an event is (STORPORT_ETW_LEVEL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// StorportEtwLevelWarning.
    Warning,
    /// StorportEtwLevelInformational.
    Informational,
}

/// One event: what StorPortEtwEvent2 takes besides the adapter.
#[derive(Clone, Copy, Debug)]
pub struct Event<'a, const D: usize, const P: usize, const Q: usize> {
    /// The miniport's id of this kind of event.
    pub id: u32,
    /// What it is.
    pub description: &'a Text<D>,
    /// STORPORT_ETW_EVENT_KEYWORD_* bits.
    pub keywords: u64,
    /// How important.
    pub level: Level,
    /// The first parameter's name and value.
    pub first: (&'a Text<P>, u64),
    /// The second parameter's name and value.
    pub second: (&'a Text<Q>, u64),
}

impl Port {
    /// Publishes `event` for the unit `address` (or the adapter), naming `srb` if given
    /// (StorPortEtwEvent2). Whether Storport took it.
    pub fn etw_event2<const D: usize, const P: usize, const Q: usize>(
        &self,
        address: Option<Address>,
        srb: Option<&Srb>,
        event: &Event<'_, D, P, Q>,
    ) -> bool {
        const {
            assert!(D <= ffi::STORPORT_ETW_MAX_DESCRIPTION_LENGTH + 1);
            assert!(P <= ffi::STORPORT_ETW_MAX_PARAM_NAME_LENGTH + 1);
            assert!(Q <= ffi::STORPORT_ETW_MAX_PARAM_NAME_LENGTH + 1);
        }
        let mut unit = address.map(|a| ffi::STOR_ADDR_BTL8 {
            Type: ffi::STOR_ADDRESS_TYPE_BTL8,
            Port: 0,
            AddressLength: ffi::STOR_ADDR_BTL8_ADDRESS_LENGTH,
            Path: a.path,
            Target: a.target,
            Lun: a.lun,
            Reserved: 0,
        });
        let unit_ptr = unit
            .as_mut()
            .map_or(core::ptr::null_mut(), |u| u as *mut ffi::STOR_ADDR_BTL8);
        let srb = srb.map_or(core::ptr::null_mut(), Srb::as_raw);
        let level = match event.level {
            Level::Warning => ffi::StorportEtwLevelWarning,
            Level::Informational => ffi::StorportEtwLevelInformational,
        };
        // SAFETY: ExtFunctionMiniportEtwEvent2 takes, after the adapter (`self`'s invariant): a
        // STOR_ADDRESS or NULL (`unit` outlives the call), the event id, a NUL-terminated UTF-16
        // description, keywords (ULONGLONG), level, opcode, an SRB of this adapter or NULL, and
        // two (NUL-terminated UTF-16 name, ULONGLONG value) pairs; every string outlives the call.
        let status = unsafe {
            ffi::StorPortExtendedFunction(
                ffi::ExtFunctionMiniportEtwEvent2,
                self.extension(),
                unit_ptr,
                event.id,
                event.description.as_ptr(),
                event.keywords,
                level,
                ffi::StorportEtwEventOpcodeInfo,
                srb,
                event.first.0.as_ptr(),
                event.first.1,
                event.second.0.as_ptr(),
                event.second.1,
            )
        };
        status == ffi::STOR_STATUS_SUCCESS
    }
}
