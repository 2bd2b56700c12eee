//! Storport performance options: DPC redirection, interrupt message ranges, concurrent channels.
//!
//! `StorPortInitializePerfOpts` (ExtendedFunction 14, only from HwStorInitialize or the passive
//! initialization routine) asks Storport to run StartIo on several CPUs at once (concurrent
//! channels), to redirect completion DPCs to the CPU that issued a request, and to spread the
//! adapter's MSI-X messages over CPUs. The layer first queries what this Storport supports and
//! requests only that. When Storport grants more than one concurrent channel it no longer holds the
//! StartIo lock around HwStorStartIo: the layer records that *before* it asks (Storport may run
//! StartIo in parallel before the request returns), and StartIo's trampoline hands the miniport
//! the matching token (`context::StartIo::Concurrent`). Half-duplex miniports get no concurrent
//! channels.
//! `StorPortGetStartIoPerfParams` (ExtendedFunction 15) tells StartIo which message (and so which
//! queue) Storport chose for a request.

use core::sync::atomic::Ordering;

use crate::context;
use crate::ffi;
use crate::miniport::header;
use crate::port::Port;
use crate::srb::Srb;

/// Callbacks that may set performance options (HwStorInitialize, passive initialization).
pub trait MayConfigurePerformance: sealed::Sealed {}
impl MayConfigurePerformance for context::Initialize {}
impl MayConfigurePerformance for context::PassiveInitialize<'_> {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::context::Initialize {}
    impl Sealed for crate::context::PassiveInitialize<'_> {}
}

/// What the miniport asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PerfRequest {
    /// Complete on the CPU that issued the request (STOR_PERF_DPC_REDIRECTION).
    pub dpc_redirection: bool,
    /// Run StartIo on up to this many CPUs at once (STOR_PERF_CONCURRENT_CHANNELS when > 1).
    pub concurrent_channels: u32,
    /// Redirect to these MSI-X messages only (STOR_PERF_INTERRUPT_MESSAGE_RANGES).
    pub message_range: Option<(u32, u32)>,
    /// STOR_PERF_OPTIMIZE_FOR_COMPLETION_DURING_STARTIO.
    pub completion_during_start_io: bool,
}

/// What Storport granted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PerfGranted {
    /// The STOR_PERF_* flags in force.
    pub flags: u32,
    /// Concurrent channels in force (1 when not granted).
    pub concurrent_channels: u32,
}

/// Queries and sets performance options. Returns what was granted; `None` when this Storport
/// supports none of them.
pub fn initialize<C: MayConfigurePerformance>(
    _ctx: &C,
    port: Port,
    request: PerfRequest,
) -> Option<PerfGranted> {
    let mut data = ffi::PERF_CONFIGURATION_DATA::zeroed();
    data.Version = ffi::STOR_PERF_VERSION;
    data.Size = core::mem::size_of::<ffi::PERF_CONFIGURATION_DATA>() as u32;
    // SAFETY: InitializePerformanceOptimizations takes (BOOLEAN Query promoted to int,
    // PERF_CONFIGURATION_DATA*) after the extension; `data` outlives the call.
    let status = unsafe {
        ffi::StorPortExtendedFunction(
            ffi::ExtFunctionInitializePerformanceOptimizations,
            port.extension(),
            1u32,
            &mut data as *mut ffi::PERF_CONFIGURATION_DATA,
        )
    };
    if status != ffi::STOR_STATUS_SUCCESS {
        return None;
    }
    let supported = data.Flags;
    let mut flags = 0;
    if request.dpc_redirection {
        flags |= ffi::STOR_PERF_DPC_REDIRECTION;
    }
    // Concurrent channels need full duplex (a half-duplex StartIo runs under the interrupt lock,
    // and its token says so).
    if request.concurrent_channels > 1 && !header(&port).half_duplex.load(Ordering::Relaxed) {
        flags |= ffi::STOR_PERF_CONCURRENT_CHANNELS;
    }
    if request.message_range.is_some() && request.dpc_redirection {
        flags |= ffi::STOR_PERF_INTERRUPT_MESSAGE_RANGES;
    }
    if request.completion_during_start_io {
        flags |= ffi::STOR_PERF_OPTIMIZE_FOR_COMPLETION_DURING_STARTIO;
    }
    flags &= supported;
    if flags == 0 {
        return None;
    }
    let mut data = ffi::PERF_CONFIGURATION_DATA::zeroed();
    data.Version = ffi::STOR_PERF_VERSION;
    data.Size = core::mem::size_of::<ffi::PERF_CONFIGURATION_DATA>() as u32;
    data.Flags = flags;
    if flags & ffi::STOR_PERF_CONCURRENT_CHANNELS != 0 {
        data.ConcurrentChannels = request.concurrent_channels;
    }
    if let Some((first, last)) = request
        .message_range
        .filter(|_| flags & ffi::STOR_PERF_INTERRUPT_MESSAGE_RANGES != 0)
    {
        data.FirstRedirectionMessageNumber = first;
        data.LastRedirectionMessageNumber = last;
    }
    // Storport may run StartIo in parallel as soon as it grants the channels, before this
    // function gets control back: say so first, so the StartIo trampoline never hands out the
    // one-channel token (which claims the StartIo lock) while channels are in force. The claim
    // "no lock held" is true either way; it is withdrawn below only once Storport answered.
    let concurrent = &header(&port).concurrent_channels;
    let before = concurrent.load(Ordering::Acquire);
    if flags & ffi::STOR_PERF_CONCURRENT_CHANNELS != 0 {
        concurrent.store(true, Ordering::SeqCst);
    }
    // SAFETY: as above, with Query = FALSE.
    let status = unsafe {
        ffi::StorPortExtendedFunction(
            ffi::ExtFunctionInitializePerformanceOptimizations,
            port.extension(),
            0u32,
            &mut data as *mut ffi::PERF_CONFIGURATION_DATA,
        )
    };
    if status != ffi::STOR_STATUS_SUCCESS {
        // Nothing changed in Storport: what was in force before still is.
        concurrent.store(before, Ordering::Release);
        return None;
    }
    let channels = if flags & ffi::STOR_PERF_CONCURRENT_CHANNELS != 0 {
        request.concurrent_channels
    } else {
        1
    };
    concurrent.store(channels > 1, Ordering::Release);
    Some(PerfGranted {
        flags,
        concurrent_channels: channels,
    })
}

/// The MSI-X message (and channel) Storport chose for `srb`'s StartIo
/// (StorPortGetStartIoPerfParams), or `None` when unavailable.
pub fn start_io_parameters(srb: &Srb) -> Option<(u32, u32)> {
    let mut params = ffi::STARTIO_PERFORMANCE_PARAMETERS::zeroed();
    params.Size = core::mem::size_of::<ffi::STARTIO_PERFORMANCE_PARAMETERS>() as u32;
    // SAFETY: GetStartIoPerformanceParameters takes (srb, STARTIO_PERFORMANCE_PARAMETERS*) after
    // the extension; both outlive the call.
    let status = unsafe {
        ffi::StorPortExtendedFunction(
            ffi::ExtFunctionGetStartIoPerformanceParameters,
            srb.port().extension(),
            srb.as_raw(),
            &mut params as *mut ffi::STARTIO_PERFORMANCE_PARAMETERS,
        )
    };
    (status == ffi::STOR_STATUS_SUCCESS).then_some((params.MessageNumber, params.ChannelNumber))
}
