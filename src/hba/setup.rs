//! Bringing the adapter up: HwStorFindAdapter, HwStorInitialize and passive initialization.
//!
//! - **FindAdapter** (PASSIVE, nothing else runs): identify the PCI function, walk its virtio
//!   capabilities, map the register structures, reset the device and negotiate features, read
//!   the disk's configuration, and lay out every queue's ring in one uncached extension (the only
//!   place Storport gives DMA memory outside requests). Tell Storport the transfer limits.
//! - **Initialize** (DIRQL, interrupt lock held): count the MSI-X messages Storport connected and
//!   choose the mode (one queue per message, or one queue behind the interrupt), give the
//!   device the ring addresses and vectors, DRIVER_OK, and read the serial number by polling.
//! - **Passive initialization**: bind each queue's STOR_DPC and ask for concurrent channels,
//!   DPC redirection and message ranges, so StartIo runs in parallel on every CPU.

use core::sync::atomic::Ordering;

use storport::config::{DumpMode, MessageSynchronization};
use storport::context;
use storport::miniport::{FindAdapterStatus, enable_passive_initialization};
use storport::perf::{self, PerfRequest};
use storport::sync::InterruptShared;
use storport::{Port, PortConfiguration};

use crate::scsi::Serial;
use crate::virtio::{
    self, BlkConfig, QueueSize, RequestArea, RequestBuilder, RequestLimits, RequestType, Transport,
    VirtioPciLayout, Virtqueue, area_size, feature,
};

use super::events::{CONFIGURATION_REFUSED, Refused};
use super::queue::Queue;
use super::request::MAX_SEGMENTS;
use super::{Adapter, Found, MAX_QUEUES, MAX_QUEUES_U16, Mode, SLOTS_U16};

/// PCI vendor id of virtio devices.
const VIRTIO_VENDOR: u16 = 0x1AF4;
/// virtio-blk: modern (1042) and transitional (1001) device ids.
const VIRTIO_BLK_DEVICES: [u16; 2] = [0x1042, 0x1001];
/// Ring entries per queue in a dump stack, where memory is scarce.
const DUMP_QUEUE_SIZE: u16 = 16;
/// The most the driver moves in one request.
const MAX_TRANSFER: u32 = 1 << 20;
/// Page size the scatter-gather limits are expressed in.
const PAGE_SIZE: u32 = 4096;
/// Bytes GET_ID returns (VIRTIO 1.2 5.2.6).
const ID_LEN: u32 = 20;
/// [`ID_LEN`] as a buffer size.
const ID_BYTES: usize = ID_LEN as usize;
/// Bytes of uncached memory the GET_ID request takes: a request area and the 20-byte buffer.
const IDENTIFY_BYTES: usize = area_size(1) + ID_BYTES;
/// Polls of the used ring (10 us apart) while waiting for GET_ID at start: 1 ms at most, at
/// DIRQL (the transport's bound on a reset wait there too). A device slower than that has its
/// answer taken later, by queue 0's next drain ([`take_late_identity`]).
const ID_POLLS: u32 = 100;

/// The features the driver can use (VIRTIO 1.2 5.2.3 and 6): everything it implements.
pub(super) const WANTED_FEATURES: u64 = feature::VERSION_1
    | feature::INDIRECT_DESC
    | feature::EVENT_IDX
    | feature::RING_PACKED
    | feature::BLK_SUPPORTED;

pub(super) fn find_adapter(
    adapter: &mut Adapter,
    ctx: &mut context::FindAdapter,
    port: Port,
    config: &mut PortConfiguration<'_>,
) -> FindAdapterStatus {
    adapter.single.bind(port);
    adapter.held_resets.bind(port);
    let dump = config.dump_mode().is_some();

    // The PCI function: ours only if it is a virtio-blk device.
    let mut pci = [0u8; 256];
    if config.read_pci_config(&mut pci) < 64 {
        return FindAdapterStatus::NotFound;
    }
    let vendor = u16::from_le_bytes([pci[0], pci[1]]);
    let device = u16::from_le_bytes([pci[2], pci[3]]);
    if vendor != VIRTIO_VENDOR || !VIRTIO_BLK_DEVICES.contains(&device) {
        return FindAdapterStatus::NotFound;
    }
    let Ok(layout) = VirtioPciLayout::parse(&pci) else {
        return FindAdapterStatus::BadConfig;
    };
    // The administrator's registry values (defaults in a dump stack, which reads none).
    let mut tunables = super::Tunables::read(config, port);
    // A dump stack reads no registry: the tunables that shape it come from the running
    // instance, through its answer to SRB_FUNCTION_DUMP_POINTERS (Storport passes that data to
    // this HwStorFindAdapter); without it, the defaults.
    if let Some(data) = config.dump_data() {
        tunables = tunables.with_dump_data(&data);
    }
    // The memory this instance uses to write the hibernation file stays valid across resume
    // (StorPortMarkDumpMemory, asked for in these two modes): this image's code and data.
    if matches!(
        config.dump_mode(),
        Some(DumpMode::Hibernate | DumpMode::MarkMemory)
    ) {
        storport::dump::mark_image_sections(ctx, port);
    }
    let refuse = |reason: Refused| port.log_error(None, CONFIGURATION_REFUSED, reason as u32);

    // Map each structure through the access range that holds its BAR.
    let mut windows: [Option<(u64, storport::register::RegisterWindow)>; 6] = [None; 6];
    let mut map = |bar: u8, offset: u32, length: u32| {
        let address = bar_address(&pci, bar)?;
        let slot = windows.get_mut(usize::from(bar))?;
        if slot.is_none() {
            let range = config
                .access_ranges()
                .find(|r| r.in_memory && r.start == address)?;
            *slot = Some((address, config.map_registers(range)?));
        }
        let (_, window) = (*slot)?;
        window.subwindow(usize::try_from(offset).ok()?, usize::try_from(length).ok()?)
    };
    let Ok(mut transport) = Transport::new(&layout, &mut map) else {
        return FindAdapterStatus::BadConfig;
    };

    let mut stall = |us: u32| port.stall(us);
    if transport.begin_init_patient(&mut stall).is_err() {
        return FindAdapterStatus::Error;
    }
    let mut wanted = if dump {
        WANTED_FEATURES & !feature::MQ
    } else {
        WANTED_FEATURES
    };
    // `packed=0` in the adapter's argument string, or PackedRing = 0 in the registry, refuses
    // packed rings when offered.
    if contains(config.argument_string(), b"packed=0") || !tunables.packed {
        wanted &= !feature::RING_PACKED;
    }
    let Ok(accepted) = transport.negotiate(wanted) else {
        refuse(Refused::Features);
        return FindAdapterStatus::Error;
    };
    let Ok(blk) = BlkConfig::read(&transport.registers(), accepted) else {
        transport.fail();
        return FindAdapterStatus::Error;
    };
    // A capacity whose byte count does not fit 64 bits is nonsense, not a disk.
    if !super::disk::capacity_is_valid(blk.capacity) {
        refuse(Refused::Capacity);
        transport.fail();
        return FindAdapterStatus::Error;
    }

    // How many rings, of what size.
    let device_queues = if dump {
        1
    } else {
        blk.num_queues.clamp(1, MAX_QUEUES_U16).min(tunables.queues)
    };
    let msix_messages = layout.msix_table_size.unwrap_or(0);
    // One message is for configuration changes; each queue takes one of the rest.
    let queues = match msix_messages.checked_sub(1) {
        Some(for_queues) if !dump && for_queues >= 1 => device_queues.min(for_queues),
        _ => 1,
    };
    let wanted_size = if dump { DUMP_QUEUE_SIZE } else { SLOTS_U16 };
    let Some(size) = transport
        .queue_max_size(0)
        .ok()
        .and_then(|max| QueueSize::choose(max, wanted_size))
    else {
        transport.fail();
        return FindAdapterStatus::Error;
    };

    // Memory: every ring, then the GET_ID area; each ring 64-aligned in bus addresses.
    let packed = accepted & feature::RING_PACKED != 0;
    if packed {
        port.debug_print(3, "vioblk: packed virtqueues (VIRTIO_F_RING_PACKED)");
    }
    let Some(ring_bytes) = Virtqueue::memory_size(size, packed).checked_next_multiple_of(64) else {
        transport.fail();
        return FindAdapterStatus::Error;
    };
    let Some(total) = ring_bytes
        .checked_mul(usize::from(queues))
        .and_then(|b| b.checked_add(IDENTIFY_BYTES))
        .and_then(|b| b.checked_add(64))
        .and_then(|b| u32::try_from(b).ok())
    else {
        return FindAdapterStatus::Error;
    };
    let Some(memory) = config.uncached_extension(total) else {
        transport.fail();
        return FindAdapterStatus::Error;
    };
    // Storport does not promise alignment (not even 1 KiB in a dump stack): align here. The
    // skew is the distance to the next multiple of 64, (-address) mod 64.
    let skew = usize::from((memory.physical_address().wrapping_neg() & 63) as u8);
    // Where ring `q` starts in the extension (the GET_ID area follows the last ring at `queues`).
    let ring_at = |q: usize| q.checked_mul(ring_bytes)?.checked_add(skew);
    let mut rings = [None; MAX_QUEUES];
    let event_idx = accepted & feature::EVENT_IDX != 0;
    let indirect = accepted & feature::INDIRECT_DESC != 0;
    for q in 0..usize::from(queues) {
        let Some(region) = ring_at(q).and_then(|at| memory.subregion(at, ring_bytes)) else {
            return FindAdapterStatus::Error;
        };
        let Some(cell) = adapter.queues.get_mut(q) else {
            return FindAdapterStatus::Error;
        };
        let Some(addresses) =
            attach_ring(cell.get_mut(), region, size, event_idx, indirect, packed)
        else {
            return FindAdapterStatus::Error;
        };
        if let Some(slot) = rings.get_mut(q) {
            *slot = Some((addresses, region));
        }
        // The single-interrupt mode uses the same ring memory; only one of the two queue objects
        // is ever used, as decided in HwStorInitialize.
        if q == 0
            && attach_ring(
                adapter.single.get_mut(),
                region,
                size,
                event_idx,
                indirect,
                packed,
            )
            .is_none()
        {
            return FindAdapterStatus::Error;
        }
    }
    let Some(identify) =
        ring_at(usize::from(queues)).and_then(|at| memory.subregion(at, IDENTIFY_BYTES))
    else {
        return FindAdapterStatus::Error;
    };

    // Limits: what one request may carry, and so what Storport may send.
    let Some((limits, max_transfer, breaks)) = transfer_limits(&blk, size, tunables.max_transfer)
    else {
        refuse(Refused::Limits);
        transport.fail();
        return FindAdapterStatus::Error;
    };
    // What a dump instance of this adapter will allow (its ring is DUMP_QUEUE_SIZE entries):
    // the answer to SRB_FUNCTION_DUMP_POINTERS.
    if !dump {
        adapter.dump_limits = transport
            .queue_max_size(0)
            .ok()
            .and_then(|max| QueueSize::choose(max, DUMP_QUEUE_SIZE))
            .and_then(|dump_size| transfer_limits(&blk, dump_size, tunables.max_transfer))
            .map(|(_, max_transfer, breaks)| (max_transfer, breaks));
    }
    config.set_transfer_limits(max_transfer, breaks);
    config.set_bus_master_adapter(0x3, 1);
    let depth = u32::from(queues).saturating_mul(u32::from(size.get()));
    config.set_queue_depth(depth, depth.min(tunables.queue_depth));
    if !dump {
        config.use_message_interrupts::<Adapter>(MessageSynchronization::PerMessage);
    }

    adapter
        .disk
        .set(super::disk::describe(&blk, max_transfer, Serial::NONE));
    // Until GET_ID gives a serial (and when it gives an empty one) the unit's VPD 80h/83h
    // identifiers come from the adapter's location, unique per adapter in the machine.
    let (bus, slot) = config.bus_slot();
    adapter
        .disk
        .set_fallback_serial(Serial::from_location(bus, slot));
    let registers = transport.registers();
    let mut control = InterruptShared::new(transport);
    control.bind(port);
    adapter.found = Some(Found {
        port,
        registers,
        control,
        features: accepted,
        config: blk,
        builder: RequestBuilder::new(limits),
        planned_queues: queues,
        rings,
        identify,
        tunables,
    });
    adapter.set_mode(if dump { Mode::Dump } else { Mode::Stopped });
    FindAdapterStatus::Found
}

pub(super) fn initialize(adapter: &Adapter, found: &Found, ctx: &mut context::Initialize) -> bool {
    let port = found.port;
    // Storport connected `messages` MSI-X messages: one for configuration and one per queue is
    // the fast path; fewer means one queue behind the interrupt lock.
    let dump = adapter.mode() == Mode::Dump;
    // A dump stack has no interrupts at all: do not even ask.
    // MsiX = 0 in the registry: one message for everything (the single-interrupt mode).
    let messages = if dump {
        0
    } else if !found.tunables.msix {
        usize::from(port.message_info(0).is_some())
    } else {
        (0..=u32::from(MAX_QUEUES_U16))
            .take_while(|&m| port.message_info(m).is_some())
            .count()
    };
    let (mode, active) = if dump {
        (Mode::Dump, 1)
    } else if messages >= 2 {
        let queues = u16::try_from(messages.saturating_sub(1)).unwrap_or(u16::MAX);
        (Mode::MultiQueue, found.planned_queues.min(queues).max(1))
    } else {
        (Mode::SingleInterrupt, 1)
    };
    adapter
        .message_interrupts
        .store(!dump && messages >= 1, Ordering::Release);
    adapter.active_queues.store(active, Ordering::Release);
    adapter.set_mode(mode);

    let notifiers = {
        let transport = found.control.get(ctx);
        match program(adapter, found, transport) {
            Some(notifiers) => notifiers,
            None => {
                transport.fail();
                return false;
            }
        }
    };
    if mode == Mode::MultiQueue {
        for (cell, notifier) in adapter.queues.iter().zip(notifiers) {
            if let Some(notifier) = notifier {
                cell.get_in_initialize(ctx).set_notifier(notifier);
            }
        }
    } else if let Some(Some(notifier)) = notifiers.first() {
        adapter.single.get(ctx).set_notifier(*notifier);
    }

    // The serial number (VPD page 0x80) comes from GET_ID; the disk works without one.
    let serial = match mode {
        Mode::MultiQueue => adapter
            .queues
            .first()
            .and_then(|cell| identify(found, cell.get_in_initialize(ctx))),
        _ => identify(found, adapter.single.get(ctx)),
    };
    if let Some(serial) = serial.filter(|serial| !serial.is_empty()) {
        adapter.disk.set_serial(serial);
    }
    // A device that answered GET_ID by breaking queue 0's ring (a bad id, a used index that ran
    // ahead) left that queue unusable: reset it now (at most the transport's 1 ms), or, if it
    // does not acknowledge, have passive initialization start the reset machine.
    let queue_zero_broken = match mode {
        Mode::MultiQueue => adapter
            .queues
            .first()
            .is_some_and(|cell| cell.get_in_initialize(ctx).is_broken()),
        _ => adapter.single.get(ctx).is_broken(),
    };
    if queue_zero_broken && !restart_at_start(adapter, found, ctx, mode) {
        adapter.broken.store(true, Ordering::Release);
    }

    // DPCs (queue completion, reset) can only be initialised, and perf options are best set, at
    // PASSIVE_LEVEL. A dump stack has neither.
    dump || enable_passive_initialization::<Adapter>(ctx, port)
}

/// Resets the device after a broken GET_ID, forgets queue 0's ring and brings the device back.
fn restart_at_start(
    adapter: &Adapter,
    found: &Found,
    ctx: &mut context::Initialize,
    mode: Mode,
) -> bool {
    let port = found.port;
    let acknowledged = found
        .control
        .get(ctx)
        .reset(&mut |us| port.stall(us))
        .is_ok();
    if !acknowledged {
        return false;
    }
    match mode {
        Mode::MultiQueue => {
            if let Some(cell) = adapter.queues.first() {
                cell.get_in_initialize(ctx).reset_ring();
            }
        }
        _ => adapter.single.get(ctx).reset_ring(),
    }
    reprogram(adapter, found, found.control.get(ctx))
}

/// Gives the device the rings and MSI-X vectors of the current mode, then DRIVER_OK
/// (VIRTIO 1.2 3.1.1 steps 7-8). Returns each queue's notifier.
fn program(
    adapter: &Adapter,
    found: &Found,
    transport: &mut Transport,
) -> Option<[Option<virtio::QueueNotifier>; MAX_QUEUES]> {
    let mode = adapter.mode();
    let active = adapter.active_queues.load(Ordering::Acquire);
    let message_mode = adapter.message_interrupts.load(Ordering::Acquire);
    let config_vector = message_mode.then_some(0);
    transport.set_config_vector(config_vector).ok()?;
    let mut notifiers: [Option<virtio::QueueNotifier>; MAX_QUEUES] = [None; MAX_QUEUES];
    for q in 0..active {
        let (addresses, _) = found.rings.get(usize::from(q)).copied().flatten()?;
        let vector = match mode {
            Mode::MultiQueue => Some(q.checked_add(1)?),
            Mode::SingleInterrupt if message_mode => Some(0),
            _ => None,
        };
        let notifier = transport.setup_queue(q, &addresses, vector).ok()?;
        if let Some(slot) = notifiers.get_mut(usize::from(q)) {
            *slot = Some(notifier);
        }
    }
    transport.driver_ok();
    Some(notifiers)
}

/// Re-initialises the device after a reset it acknowledged (`device_status` read 0) with the
/// features, rings and vectors it had (the driver side of every ring must already be back at its
/// initial state). No second reset: a device slow to reset would make this wait again.
pub(super) fn reprogram(adapter: &Adapter, found: &Found, transport: &mut Transport) -> bool {
    if !transport.reset_acknowledged() {
        return false;
    }
    transport.begin_init_acknowledged();
    // The device acknowledged its reset: it may use memory again.
    if adapter.dma_cut.load(Ordering::Acquire) {
        if !found.port.set_bus_master(true) {
            return false;
        }
        adapter.dma_cut.store(false, Ordering::Release);
    }
    match transport.negotiate(found.features) {
        Ok(accepted) if accepted == found.features => program(adapter, found, transport).is_some(),
        _ => {
            transport.fail();
            false
        }
    }
}

pub(super) fn passive_initialize<'a>(
    adapter: &'a Adapter,
    found: &Found,
    ctx: &mut context::PassiveInitialize<'a>,
) -> bool {
    let port = found.port;
    let active = adapter.active_queues.load(Ordering::Acquire);
    match adapter.mode() {
        Mode::MultiQueue => {
            for cell in adapter.queues.iter().take(usize::from(active)) {
                cell.dpc().initialize(ctx, port, adapter);
            }
        }
        Mode::SingleInterrupt => {
            adapter.single_dpc.initialize(ctx, port, adapter);
        }
        Mode::Dump | Mode::Stopped => return true,
    }
    adapter.reset_dpc.initialize(ctx, port, adapter);
    // Interrupts came in between HwStorInitialize and now, but the DPCs they issue did not
    // exist yet, so those issues did nothing. One is the GET_ID answer that came after the
    // poll: left in queue 0's used ring, it would also leave the interrupt threshold (used_event,
    // with event idx) at that first element, and the device would interrupt for none of the
    // queue's later completions. Drain queue 0 now. Likewise a reset begun meanwhile (a
    // configuration interrupt announcing DEVICE_NEEDS_RESET) gets its DPC now.
    match adapter.mode() {
        Mode::MultiQueue => {
            if let Some(cell) = adapter.queues.first() {
                cell.dpc().issue(&*ctx, 0, 0);
            }
        }
        _ => {
            adapter.single_dpc.issue(&*ctx, 0, 0);
        }
    }
    if adapter.resetting() {
        adapter.reset_dpc.issue(&*ctx, super::RESET_DPC, 0);
    }
    if adapter.broken.load(Ordering::Acquire) {
        // HwStorInitialize could not bring the device back after a broken GET_ID.
        super::reset::begin_reset(adapter, found, &*ctx, super::events::Cause::BrokenRing(0));
    }
    if adapter.mode() == Mode::MultiQueue && active > 1 {
        let request = PerfRequest {
            dpc_redirection: true,
            concurrent_channels: u32::from(active),
            message_range: Some((1, u32::from(active))),
            completion_during_start_io: false,
        };
        // Without these, Storport serialises StartIo; the driver still works, just slower.
        let _ = perf::initialize(ctx, port, request);
    }
    true
}

/// Reads the device's serial number with GET_ID, polling queue 0 (HwStorInitialize, before any
/// request). A device that answers after the polling gave up is heard from later: queue 0's
/// next drain takes the answer ([`take_late_identity`]).
fn identify(found: &Found, queue: &mut Queue) -> Option<Serial> {
    let (area, buffer) = identify_area(found)?;
    let built = found
        .builder
        .build_data(
            &area,
            RequestType::GetId,
            0,
            [(buffer.physical_address(), ID_LEN)],
        )
        .ok()?;
    let notifier = queue.submit_internal(&area, &built)?;
    notifier.notify();
    for _ in 0..ID_POLLS {
        if queue.poll_internal() {
            return answered_identity(found);
        }
        if queue.is_broken() {
            return None;
        }
        found.port.stall(10);
    }
    None
}

/// The GET_ID request area and the 20-byte buffer after it.
fn identify_area(
    found: &Found,
) -> Option<(RequestArea<'static>, storport::dma::DmaRegion<'static>)> {
    let region = found.identify;
    let area = RequestArea::new(region.subregion(0, area_size(1))?)?;
    let buffer = region.subregion(area_size(1), ID_BYTES)?;
    Some((area, buffer))
}

/// The serial number a completed GET_ID wrote, if it succeeded (VIRTIO 1.2 5.2.6).
fn answered_identity(found: &Found) -> Option<Serial> {
    let (area, buffer) = identify_area(found)?;
    if area.status() != virtio::Status::Ok {
        return None;
    }
    let mut id = [0u8; ID_BYTES];
    for (dst, src) in id.iter_mut().zip(buffer.bytes()) {
        *dst = src.load(Ordering::Relaxed);
    }
    Some(Serial::from_id(&id))
}

/// Records the serial number of a GET_ID the device answered after HwStorInitialize stopped
/// polling for it, which a drain of queue 0 found (called after the queue lock is released).
/// The device wrote the answer before the used element that announced it, and nothing writes
/// the identify area again, so it is read without a lock.
pub(super) fn take_late_identity(adapter: &Adapter, found: &Found) {
    if let Some(serial) = answered_identity(found).filter(|serial| !serial.is_empty()) {
        adapter.disk.set_serial(serial);
    }
}

/// Lays a ring out in `region` and gives it to `queue`; returns the addresses the device needs.
///
/// A function of its own so the ring (a few KiB of bookkeeping) is built in a small frame: the
/// kernel stack is 24 KiB and frames over a page would need `__chkstk`.
#[inline(never)]
fn attach_ring(
    queue: &mut Queue,
    region: storport::dma::DmaRegion<'static>,
    size: QueueSize,
    event_idx: bool,
    indirect: bool,
    packed: bool,
) -> Option<virtio::QueueAddresses> {
    queue.attach(
        Virtqueue::new(region, size, event_idx, packed).ok()?,
        indirect,
    );
    queue.addresses()
}

/// What one request may carry over a ring of `size`: the request limits, Storport's
/// MaximumTransferLength and NumberOfPhysicalBreaks; `None` when such a ring could serve no
/// request.
fn transfer_limits(
    blk: &BlkConfig,
    size: QueueSize,
    tunable_max_transfer: u32,
) -> Option<(RequestLimits, u32, u32)> {
    let limits = RequestLimits::new(blk, size, area_size(MAX_SEGMENTS));
    // Segments one page may need (1 once a segment may hold a page); 0 is no limit.
    let per_page = match limits.max_segment_size {
        0 => 1,
        max => PAGE_SIZE.div_ceil(max),
    };
    // Storport's NumberOfPhysicalBreaks is one less than the pages a request may touch, and a
    // buffer of one page may touch two: a device whose ring or segment limits cannot carry that
    // much (a queue of 2 or 3 leaves no data descriptor; size_max 1 needs 4096 per page) could
    // serve no request, and is refused rather than presented as a disk that fails every I/O.
    let elements = u32::from(limits.max_data_segments)
        .checked_div(per_page)
        .unwrap_or(0);
    // The pages a request may span: one less than the elements (a buffer may start mid-page).
    let pages = elements.saturating_sub(1);
    let block_bytes = blk.blk_size.unwrap_or(512).max(512);
    if pages == 0 || pages.saturating_mul(PAGE_SIZE) < block_bytes {
        return None;
    }
    // MaxTransferKB lowers the limit, never below one block (its minimum is 4 KiB).
    let max_transfer = pages
        .saturating_mul(PAGE_SIZE)
        .min(MAX_TRANSFER)
        .min(tunable_max_transfer.max(block_bytes));
    let breaks = pages.min(max_transfer.div_ceil(PAGE_SIZE));
    Some((limits, max_transfer, breaks))
}

/// The bus address a BAR decodes, from the configuration space (64-bit BARs included).
fn bar_address(pci: &[u8; 256], bar: u8) -> Option<u64> {
    let offset = 0x10usize.checked_add(usize::from(bar).checked_mul(4)?)?;
    let low = u32::from_le_bytes(pci.get(offset..offset.checked_add(4)?)?.try_into().ok()?);
    if low & 1 != 0 {
        return None; // I/O space: virtio structures are in memory BARs.
    }
    let is_64 = (low >> 1) & 3 == 2;
    let high = if is_64 {
        let high = offset.checked_add(4)?;
        u32::from_le_bytes(pci.get(high..high.checked_add(4)?)?.try_into().ok()?)
    } else {
        0
    };
    Some(u64::from(high) << 32 | u64::from(low & !0xF))
}

/// Whether `haystack` contains `needle`, ASCII case-insensitively.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}
