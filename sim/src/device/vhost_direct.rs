//! A vhost-user-blk client with no driver and no PCI function: the benchmark's baseline for
//! what the back end itself can do.
//!
//! It speaks vhost-user to the back end directly (rust-vmm `vhost`), lays out one split ring in
//! shared guest memory, and keeps `queue_depth` random reads in flight: a request is three
//! descriptors (header, data, status), submission is an avail entry plus a write to the kick
//! eventfd, completion is the call eventfd followed by the used ring. No indirect descriptors,
//! no event idx: the simplest thing that works, so what it measures is the back end and the
//! eventfd round trip. Every value the back end writes is checked (used ids in flight, status).

use std::path::Path;
use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

use std::os::fd::AsRawFd;
use vhost::vhost_user::message::VhostUserConfigFlags;
use vhost::vhost_user::{
    Frontend, VhostUserFrontend, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::blk::{HEADER_LEN, req_status, req_type};
use super::config::features;

const GPA: u64 = 0x1_0000_0000;
const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;
const RING: u64 = 0;
const AVAIL: u64 = 0x4000;
const USED: u64 = 0x8000;
const BUFFERS: u64 = 0x1_0000;

/// What one run measured.
#[derive(Clone, Copy, Debug)]
pub struct DirectRun {
    /// Reads completed with status OK.
    pub ok: u64,
    /// Reads completed otherwise.
    pub errors: u64,
    /// First submission to last completion.
    pub elapsed: Duration,
}

fn err<E: std::fmt::Debug>(what: &'static str) -> impl FnOnce(E) -> String {
    move |e| format!("vhost-user {what}: {e:?}")
}

/// Keeps `queue_depth` (at most 256) random `block_size` reads in flight on queue 0 of the
/// back end at `socket` until `ios` completed.
///
/// # Errors
/// The handshake failed, the back end wrote something no device may write, or it stopped
/// answering (30 s without a completion).
pub fn random_reads(
    socket: &Path,
    queue_depth: u16,
    block_size: u32,
    ios: u64,
    seed: u64,
) -> Result<DirectRun, String> {
    let qd = queue_depth.clamp(1, 256);
    let size: u16 = 256;
    let mut fe = Frontend::connect(socket, 1).map_err(err("connect"))?;
    fe.set_owner().map_err(err("SET_OWNER"))?;
    let offered = fe.get_features().map_err(err("GET_FEATURES"))?;
    let protocol = fe
        .get_protocol_features()
        .map_err(err("GET_PROTOCOL_FEATURES"))?;
    fe.set_protocol_features(
        protocol & (VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ),
    )
    .map_err(err("SET_PROTOCOL_FEATURES"))?;
    let (_, config) = fe
        .get_config(0, 8, VhostUserConfigFlags::empty(), &[0u8; 8])
        .map_err(err("GET_CONFIG"))?;
    let capacity = u64::from_le_bytes(
        config
            .get(..8)
            .and_then(|c| c.try_into().ok())
            .ok_or("short config")?,
    );
    let wanted = features::VERSION_1 | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
    if offered & wanted != wanted {
        return Err(format!("the back end lacks VERSION_1 ({offered:#x})"));
    }
    fe.set_features(wanted).map_err(err("SET_FEATURES"))?;

    let per = u64::from(block_size).next_multiple_of(4096) + 4096;
    let len = usize::try_from(BUFFERS + per * u64::from(qd)).map_err(|e| e.to_string())?;
    let file =
        storport_sim::memfd::memfd(c"vioblk-direct", len as u64).map_err(|e| e.to_string())?;
    let mem = GuestMemoryMmap::<()>::from_ranges_with_files([(
        GuestAddress(GPA),
        len,
        Some(FileOffset::new(file, 0)),
    )])
    .map_err(|e| e.to_string())?;
    let region = mem.iter().next().ok_or("no region")?;
    fe.set_mem_table(&[
        VhostUserMemoryRegionInfo::from_guest_region(region).map_err(err("region"))?
    ])
    .map_err(err("SET_MEM_TABLE"))?;
    let hva = |gpa: u64| {
        mem.get_host_address(GuestAddress(gpa))
            .map(|p| p as u64)
            .map_err(|e| e.to_string())
    };
    let kick = EventFd::new(0).map_err(|e| e.to_string())?;
    let call = EventFd::new(0).map_err(|e| e.to_string())?;
    fe.set_vring_num(0, size).map_err(err("SET_VRING_NUM"))?;
    fe.set_vring_addr(
        0,
        &VringConfigData {
            queue_max_size: size,
            queue_size: size,
            flags: 0,
            desc_table_addr: hva(GPA + RING)?,
            used_ring_addr: hva(GPA + USED)?,
            avail_ring_addr: hva(GPA + AVAIL)?,
            log_addr: None,
        },
    )
    .map_err(err("SET_VRING_ADDR"))?;
    fe.set_vring_base(0, 0).map_err(err("SET_VRING_BASE"))?;
    fe.set_vring_call(0, &call).map_err(err("SET_VRING_CALL"))?;
    fe.set_vring_kick(0, &kick).map_err(err("SET_VRING_KICK"))?;
    fe.set_vring_enable(0, true)
        .map_err(err("SET_VRING_ENABLE"))?;

    let sectors_per_io = u64::from(block_size / 512).max(1);
    let blocks = (capacity / sectors_per_io).max(1);
    let mut rng = seed.max(1);
    let mut next_sector = move || {
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_F491_4F6C_DD1D) % blocks * sectors_per_io
    };
    let w = |value: &dyn Fn(&GuestMemoryMmap) -> Result<(), vm_memory::GuestMemoryError>| {
        value(&mem).map_err(|e| e.to_string())
    };
    let mut avail_idx: u16 = 0;
    let mut last_used: u16 = 0;
    let mut in_flight = vec![false; usize::from(qd)];
    // Request `slot`: descriptors 3*slot..3*slot+2 and the slot's buffer.
    let mut post = |slot: u16, avail_idx: &mut u16| -> Result<(), String> {
        let buf = GPA + BUFFERS + per * u64::from(slot);
        let (header, status, data) = (buf, buf + 16, buf + 4096);
        let sector = next_sector();
        w(&|m| m.write_obj(req_type::IN.to_le(), GuestAddress(header)))?;
        w(&|m| m.write_obj(0u32, GuestAddress(header + 4)))?;
        w(&|m| m.write_obj(sector.to_le(), GuestAddress(header + 8)))?;
        w(&|m| m.write_obj(0xFFu8, GuestAddress(status)))?;
        let d0 = slot * 3;
        for (i, (addr, len, flags)) in [
            (header, HEADER_LEN, DESC_F_NEXT),
            (data, block_size, DESC_F_NEXT | DESC_F_WRITE),
            (status, 1, DESC_F_WRITE),
        ]
        .into_iter()
        .enumerate()
        {
            let at = GPA + RING + (u64::from(d0) + i as u64) * 16;
            w(&|m| m.write_obj(addr.to_le(), GuestAddress(at)))?;
            w(&|m| m.write_obj(len.to_le(), GuestAddress(at + 8)))?;
            w(&|m| m.write_obj(flags.to_le(), GuestAddress(at + 12)))?;
            w(&|m| m.write_obj((d0 + i as u16 + 1).to_le(), GuestAddress(at + 14)))?;
        }
        let entry = GPA + AVAIL + 4 + u64::from(*avail_idx % size) * 2;
        w(&|m| m.write_obj(d0.to_le(), GuestAddress(entry)))?;
        *avail_idx = avail_idx.wrapping_add(1);
        // VIRTIO 1.2 2.7.13: the entry before the index.
        fence(Ordering::Release);
        let idx = *avail_idx;
        w(&|m| {
            m.store(
                idx.to_le(),
                GuestAddress(GPA + AVAIL + 2),
                Ordering::Release,
            )
        })
    };

    let start = Instant::now();
    let (mut submitted, mut ok, mut errors) = (0u64, 0u64, 0u64);
    for slot in 0..qd {
        if submitted < ios {
            post(slot, &mut avail_idx)?;
            in_flight[usize::from(slot)] = true;
            submitted += 1;
        }
    }
    kick.write(1).map_err(|e| e.to_string())?;
    let epoll = Epoll::new().map_err(|e| e.to_string())?;
    epoll
        .ctl(
            ControlOperation::Add,
            call.as_raw_fd(),
            EpollEvent::new(EventSet::IN, 0),
        )
        .map_err(|e| e.to_string())?;
    let mut ready = [EpollEvent::default()];
    while ok + errors < submitted {
        // Waits for the back end's call, at most 30 s (a back end that stopped answering).
        if epoll.wait(30_000, &mut ready).map_err(|e| e.to_string())? == 0 {
            return Err("the back end stopped completing requests (30 s)".to_owned());
        }
        // Non-blocking (the back end made the shared file description so): EAGAIN after a
        // wake-up only means another read took the count.
        let _ = call.read();
        let used: u16 = mem
            .load::<u16>(GuestAddress(GPA + USED + 2), Ordering::Acquire)
            .map(u16::from_le)
            .map_err(|e| e.to_string())?;
        if used.wrapping_sub(last_used) > qd {
            return Err(format!(
                "the back end moved used.idx from {last_used} to {used}"
            ));
        }
        let mut reposted = false;
        while last_used != used {
            let e = GPA + USED + 4 + u64::from(last_used % size) * 8;
            let id: u32 = u32::from_le(mem.read_obj(GuestAddress(e)).map_err(|e| e.to_string())?);
            let slot = u16::try_from(id / 3).ok().filter(|s| {
                id.is_multiple_of(3) && in_flight.get(usize::from(*s)).copied().unwrap_or(false)
            });
            let Some(slot) = slot else {
                return Err(format!("the back end completed id {id}, not in flight"));
            };
            in_flight[usize::from(slot)] = false;
            let buf = GPA + BUFFERS + per * u64::from(slot);
            let status: u8 = mem
                .read_obj(GuestAddress(buf + 16))
                .map_err(|e| e.to_string())?;
            if status == req_status::OK {
                ok += 1;
            } else {
                errors += 1;
            }
            last_used = last_used.wrapping_add(1);
            if submitted < ios {
                post(slot, &mut avail_idx)?;
                in_flight[usize::from(slot)] = true;
                submitted += 1;
                reposted = true;
            }
        }
        if reposted {
            kick.write(1).map_err(|e| e.to_string())?;
        }
    }
    let elapsed = start.elapsed();
    // Idle now: stop the ring before the session closes.
    let _ = fe.get_vring_base(0);
    Ok(DirectRun {
        ok,
        errors,
        elapsed,
    })
}
