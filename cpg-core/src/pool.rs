//! Zero-copy buffer bookkeeping: which slot of the buffer region is free,
//! who holds it, and when it may be reused.
//!
//! # What it owns
//!
//! One contiguous byte region, [`Pool::region_len`] bytes long, cut into
//! slots of up to [`CLASSES_MAX`] size classes, laid out class after class in
//! ascending slot size. Every slot starts with `headroom` bytes reserved for
//! the frame and CPG headers, followed by the payload the application writes,
//! so the engine writes its headers in front of the payload in place and a
//! multicast never moves the payload:
//!
//! ```text
//! region: | class 0 slot 0 | class 0 slot 1 | ... | class 1 slot 0 | ... |
//! slot:   | headroom (frame + CPG headers) | payload (payload_capacity) |
//!         ^ slot_offset                     ^ payload_offset
//! ```
//!
//! The pool owns the state of every slot and a generation per slot. A
//! [`SlotId`] names a slot *and* the allocation it came from: freeing a slot
//! bumps its generation, so an id kept past its free is a [`SlotError::StaleSlot`],
//! never a use-after-free.
//!
//! # What it must not do
//!
//! It holds indices and states only: no pointer, no byte of the region and
//! nothing about io_uring. `cpg-uring` owns, maps and registers the memory and
//! turns a [`SlotId`] into an address with [`Pool::payload_offset`] /
//! [`Pool::slot_offset`]. It never allocates after construction, every
//! operation is O(1) (the class chooser looks at no more than [`CLASSES_MAX`]
//! classes), and no id, however bad, makes it panic: every transition checks
//! the generation and the current state and answers a typed [`SlotError`].
//!
//! # Life of a slot
//!
//! ```text
//!        alloc            enqueue           begin_send
//! Free ────────→ Owned ─────────→ Queued ─────────────→ InFlight { sends_pending }
//!  ↑               │ release                             │  begin_send: +1
//!  │               ↓                                     │  on_send_complete / on_zc_notif: -1
//!  └────── Free ◄──┘        Free ◄── stable and sends_pending == 0 (mark_stable or
//!                                    the last completion, whichever comes last)
//! ```
//!
//! - **Owned**: the application writes the payload ([`Pool::alloc`], the
//!   `zcb_alloc` path); it may give the slot back unsent ([`Pool::release`]).
//! - **Queued**: handed to the engine by `mcast` ([`Pool::enqueue`]), waiting
//!   for the token.
//! - **InFlight**: sent at least once ([`Pool::begin_send`]); kept for
//!   retransmission until the engine says every member has it
//!   ([`Pool::mark_stable`]), and while the kernel may still read it
//!   (`sends_pending`: each send submitted counts one, each completion —
//!   [`Pool::on_send_complete`] for a plain send, [`Pool::on_zc_notif`] for the
//!   notification of a `SendZc` — takes one off). The slot is freed by
//!   whichever of the two comes last, and that call answers [`Outcome::Freed`].
//!
//! # Storage
//!
//! [`Pool<S>`] keeps one small [`Slot`] record per slot in caller-provided
//! storage `S: AsRef<[Slot]> + AsMut<[Slot]>` (smoltcp's `ManagedSlice`
//! idea): an array `[Slot; N]` ([`ArrayPool<N>`], no allocator needed), a
//! `&'static mut [Slot]`, or with the `alloc` feature a `Vec<Slot>` sized to
//! the configuration (`Pool::new_vec`, `VecPool`). The storage length is
//! the capacity; a configuration with more slots is refused
//! ([`PoolConfigError::TooManySlots`]). Free slots of each class form an
//! intrusive free list through the records (LIFO, so a hot slot is reused
//! while it is still in cache).
//!
//! # References
//!
//! `docs/ARCHITECTURE.md` (cpg-core `pool.rs`, Policies "Send operations"),
//! `docs/STYLE.md` §4; corosync `exec/cpg.c` `message_handler_req_lib_cpg_zc_alloc`
//! (the zero-copy buffers this replaces).

use core::fmt;

use crate::types::CsError;

/// Most size classes one pool has.
pub const CLASSES_MAX: usize = 8;

/// A sensible headroom: room for the frame and CPG headers in front of every
/// payload.
pub const HEADROOM_DEFAULT: usize = 256;

/// Most slots one pool indexes (`u32::MAX` marks the end of a free list).
pub const SLOTS_MAX: usize = NIL as usize;

/// End of a free list.
const NIL: u32 = u32::MAX;

// The class of a slot is stored in a `u8`.
static_assertions::const_assert!(CLASSES_MAX <= u8::MAX as usize);

/// One size class of a [`PoolConfig`]: `count` slots of `slot_size` bytes
/// each (headroom included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassSpec {
    /// Bytes per slot, headroom included; must exceed the headroom.
    pub slot_size: usize,
    /// Slots in this class; must be positive.
    pub count: usize,
}

impl ClassSpec {
    /// `count` slots of `slot_size` bytes.
    pub const fn new(slot_size: usize, count: usize) -> ClassSpec {
        ClassSpec { slot_size, count }
    }
}

/// The shape of a pool: headroom and size classes.
///
/// Classes are listed in strictly ascending `slot_size`; a class is named by
/// its index in this list everywhere in the pool's API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Bytes reserved in front of every payload for the frame and CPG
    /// headers ([`HEADROOM_DEFAULT`] is a good start).
    pub headroom: usize,
    /// The size classes, smallest first.
    pub classes: heapless::Vec<ClassSpec, CLASSES_MAX>,
}

impl PoolConfig {
    /// A validated configuration of `headroom` and `classes` (smallest first).
    ///
    /// # Errors
    ///
    /// [`PoolConfigError::TooManyClasses`] beyond [`CLASSES_MAX`] classes, and
    /// whatever [`PoolConfig::validate`] refuses.
    pub fn new(headroom: usize, classes: &[ClassSpec]) -> Result<PoolConfig, PoolConfigError> {
        let classes = heapless::Vec::from_slice(classes)
            .map_err(|()| PoolConfigError::TooManyClasses(classes.len()))?;
        let config = PoolConfig { headroom, classes };
        config.validate()?;
        Ok(config)
    }

    /// Check that a pool can be laid out from this configuration (the
    /// storage capacity is checked by [`Pool::new`]).
    ///
    /// # Errors
    ///
    /// No classes, a zero slot size, an empty class, a headroom not below a
    /// slot size, classes not in strictly ascending size, more than
    /// [`SLOTS_MAX`] slots, or a region longer than `usize::MAX`.
    pub fn validate(&self) -> Result<(), PoolConfigError> {
        self.layout().map(|_| ())
    }

    /// Total slots over all classes (saturating; exact once valid).
    pub fn slot_count(&self) -> usize {
        self.classes
            .iter()
            .fold(0usize, |n, c| n.saturating_add(c.count))
    }

    /// Bytes of region this configuration needs.
    ///
    /// # Errors
    ///
    /// As [`PoolConfig::validate`].
    pub fn region_len(&self) -> Result<usize, PoolConfigError> {
        self.layout().map(|(_, len)| len)
    }

    /// `(slot count, region length)`, or why there is none.
    fn layout(&self) -> Result<(usize, usize), PoolConfigError> {
        if self.classes.is_empty() {
            return Err(PoolConfigError::NoClasses);
        }
        let mut slots = 0usize;
        let mut len = 0usize;
        let mut prev_size = 0usize;
        for (class, spec) in self.classes.iter().enumerate() {
            if spec.slot_size == 0 {
                return Err(PoolConfigError::ZeroSlotSize { class });
            }
            if spec.count == 0 {
                return Err(PoolConfigError::EmptyClass { class });
            }
            if self.headroom >= spec.slot_size {
                return Err(PoolConfigError::HeadroomTooLarge { class });
            }
            if class > 0 && spec.slot_size <= prev_size {
                return Err(PoolConfigError::ClassesNotAscending { class });
            }
            prev_size = spec.slot_size;
            slots = slots
                .checked_add(spec.count)
                .filter(|&n| n <= SLOTS_MAX)
                .ok_or(PoolConfigError::TooManySlots {
                    needed: self.slot_count(),
                    capacity: SLOTS_MAX,
                })?;
            len = spec
                .slot_size
                .checked_mul(spec.count)
                .and_then(|class_len| len.checked_add(class_len))
                .ok_or(PoolConfigError::RegionOverflow)?;
        }
        Ok((slots, len))
    }
}

/// A configuration no pool can be built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolConfigError {
    /// No size class at all.
    NoClasses,
    /// More than [`CLASSES_MAX`] classes (the number given).
    TooManyClasses(usize),
    /// A class with a slot size of zero.
    ZeroSlotSize {
        /// Index of the class.
        class: usize,
    },
    /// A class with no slots.
    EmptyClass {
        /// Index of the class.
        class: usize,
    },
    /// The headroom leaves no payload in a class's slots.
    HeadroomTooLarge {
        /// Index of the class.
        class: usize,
    },
    /// A class is not strictly larger than the one before it.
    ClassesNotAscending {
        /// Index of the class.
        class: usize,
    },
    /// More slots than the storage (or [`SLOTS_MAX`]) holds.
    TooManySlots {
        /// Slots the classes ask for.
        needed: usize,
        /// Slot records available.
        capacity: usize,
    },
    /// The region length does not fit in a `usize`.
    RegionOverflow,
}

impl fmt::Display for PoolConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolConfigError::NoClasses => write!(f, "pool has no size classes"),
            PoolConfigError::TooManyClasses(n) => {
                write!(f, "{n} size classes, at most {CLASSES_MAX}")
            }
            PoolConfigError::ZeroSlotSize { class } => {
                write!(f, "size class {class} has zero slot size")
            }
            PoolConfigError::EmptyClass { class } => write!(f, "size class {class} has no slots"),
            PoolConfigError::HeadroomTooLarge { class } => {
                write!(f, "headroom leaves no payload in size class {class}")
            }
            PoolConfigError::ClassesNotAscending { class } => {
                write!(f, "size class {class} is not larger than the one before")
            }
            PoolConfigError::TooManySlots { needed, capacity } => {
                write!(f, "{needed} slots, room for {capacity}")
            }
            PoolConfigError::RegionOverflow => write!(f, "pool region length overflows usize"),
        }
    }
}

impl core::error::Error for PoolConfigError {}

/// Names one allocation of one slot: `index` picks the slot, `generation`
/// the allocation (it changes every time the slot is freed).
///
/// Generations are `u32` and wrap: an id kept across 2³² reuses of its slot
/// would alias, which no caller holds an id for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotId {
    index: u32,
    generation: u32,
}

impl SlotId {
    /// An id from its parts (for drivers that pack ids into `user_data`);
    /// the pool validates it like any other.
    pub const fn from_parts(index: u32, generation: u32) -> SlotId {
        SlotId { index, generation }
    }

    /// The slot's index in the pool (0-based, over all classes).
    pub const fn index(self) -> u32 {
        self.index
    }

    /// The allocation this id belongs to.
    pub const fn generation(self) -> u32 {
        self.generation
    }
}

/// Where a slot is in its life (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlotState {
    /// On its class's free list.
    Free,
    /// Held by the application, which writes the payload.
    Owned,
    /// Handed to the engine, waiting for the token.
    Queued,
    /// Sent; kept until stable and until no send is outstanding.
    InFlight {
        /// Sends submitted whose completion (or zero-copy notification) has
        /// not come back yet.
        sends_pending: u16,
    },
}

impl SlotState {
    /// The state without its data.
    pub const fn kind(self) -> StateKind {
        match self {
            SlotState::Free => StateKind::Free,
            SlotState::Owned => StateKind::Owned,
            SlotState::Queued => StateKind::Queued,
            SlotState::InFlight { .. } => StateKind::InFlight,
        }
    }
}

/// A [`SlotState`] without its data, as named in [`SlotError::WrongState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateKind {
    /// [`SlotState::Free`].
    Free,
    /// [`SlotState::Owned`].
    Owned,
    /// [`SlotState::Queued`].
    Queued,
    /// [`SlotState::InFlight`].
    InFlight,
}

impl fmt::Display for StateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StateKind::Free => "free",
            StateKind::Owned => "owned",
            StateKind::Queued => "queued",
            StateKind::InFlight => "in flight",
        })
    }
}

/// What a transition that may free the slot did.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The slot is still held (not yet stable, or sends still pending).
    Held,
    /// The slot went back to its free list; its id is stale from now on.
    Freed,
}

impl Outcome {
    /// Whether the slot was freed.
    pub const fn is_freed(self) -> bool {
        matches!(self, Outcome::Freed)
    }
}

/// Why [`Pool::alloc`] gave no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocError {
    /// No class holds `len` payload bytes (`CS_ERR_TOO_BIG`).
    TooBig {
        /// Payload bytes asked for.
        len: usize,
        /// The largest payload any slot holds.
        max: usize,
    },
    /// Every class that fits is empty right now (`CS_ERR_TRY_AGAIN`).
    Exhausted,
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocError::TooBig { len, max } => {
                write!(f, "{len} bytes exceed the largest slot payload {max}")
            }
            AllocError::Exhausted => write!(f, "no free slot, try again"),
        }
    }
}

impl core::error::Error for AllocError {}

impl From<AllocError> for CsError {
    fn from(e: AllocError) -> CsError {
        match e {
            AllocError::TooBig { .. } => CsError::TooBig,
            AllocError::Exhausted => CsError::TryAgain,
        }
    }
}

/// Why a transition or lookup on a [`SlotId`] was refused. The pool is
/// unchanged after any of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotError {
    /// The index names no slot of this pool.
    UnknownSlot,
    /// The slot was freed since this id was handed out (or the id was never
    /// handed out).
    StaleSlot,
    /// The slot is live but not in a state this transition starts from.
    WrongState {
        /// The state the transition starts from.
        expected: StateKind,
        /// The slot's state.
        found: StateKind,
    },
    /// A completion for an in-flight slot with no send pending.
    NoSendPending,
    /// `u16::MAX` sends already pending on the slot.
    SendsSaturated,
    /// [`Pool::mark_stable`] twice for the same slot.
    AlreadyStable,
}

impl fmt::Display for SlotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlotError::UnknownSlot => write!(f, "no such slot"),
            SlotError::StaleSlot => write!(f, "stale slot id"),
            SlotError::WrongState { expected, found } => {
                write!(f, "slot is {found}, expected {expected}")
            }
            SlotError::NoSendPending => write!(f, "no send pending on slot"),
            SlotError::SendsSaturated => write!(f, "too many sends pending on slot"),
            SlotError::AlreadyStable => write!(f, "slot already stable"),
        }
    }
}

impl core::error::Error for SlotError {}

/// Counters of a pool (monotonic totals and current gauges).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Slots handed out by [`Pool::alloc`].
    pub allocated: u64,
    /// Slots returned to a free list.
    pub freed: u64,
    /// [`AllocError::Exhausted`] answers (`CS_ERR_TRY_AGAIN`).
    pub exhausted: u64,
    /// [`AllocError::TooBig`] answers.
    pub too_big: u64,
    /// Slots now [`SlotState::Owned`].
    pub owned: usize,
    /// Slots now [`SlotState::Queued`].
    pub queued: usize,
    /// Slots now [`SlotState::InFlight`].
    pub in_flight: usize,
    /// Most slots ever in use at once (high-water mark).
    pub in_use_max: usize,
}

impl PoolStats {
    /// Slots not free now.
    pub const fn in_use(&self) -> usize {
        self.owned + self.queued + self.in_flight
    }
}

/// One size class as built, for callers that size or report things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassInfo {
    /// Bytes per slot, headroom included.
    pub slot_size: usize,
    /// Payload bytes per slot (`slot_size - headroom`).
    pub payload_capacity: usize,
    /// Slots in the class.
    pub count: usize,
    /// Slots of the class free now.
    pub free: usize,
    /// Byte offset of the class's first slot in the region.
    pub region_offset: usize,
}

/// The bookkeeping record of one slot. Opaque; storage for a [`Pool`] is
/// built from [`Slot::EMPTY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    generation: u32,
    /// Next free slot of the same class, or [`NIL`]; meaningful when free.
    next: u32,
    class: u8,
    state: Inner,
}

impl Slot {
    /// A record to fill pool storage with (`[Slot::EMPTY; N]`).
    pub const EMPTY: Slot = Slot {
        generation: 0,
        next: NIL,
        class: 0,
        state: Inner::Free,
    };
}

impl Default for Slot {
    fn default() -> Slot {
        Slot::EMPTY
    }
}

/// [`SlotState`] plus what only the pool needs (the stable mark).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inner {
    Free,
    Owned,
    Queued,
    InFlight { sends_pending: u16, stable: bool },
}

impl Inner {
    const fn public(self) -> SlotState {
        match self {
            Inner::Free => SlotState::Free,
            Inner::Owned => SlotState::Owned,
            Inner::Queued => SlotState::Queued,
            Inner::InFlight { sends_pending, .. } => SlotState::InFlight { sends_pending },
        }
    }

    const fn kind(self) -> StateKind {
        self.public().kind()
    }
}

/// One class as built: its part of the index space and of the region, and
/// its free list.
#[derive(Debug, Clone, Copy)]
struct Class {
    slot_size: usize,
    /// Index of the class's first slot.
    first: u32,
    count: u32,
    /// Byte offset of the class's first slot.
    base: usize,
    /// First free slot, or [`NIL`].
    head: u32,
    free: u32,
}

impl Class {
    const UNUSED: Class = Class {
        slot_size: 0,
        first: 0,
        count: 0,
        base: 0,
        head: NIL,
        free: 0,
    };
}

/// A pool over an array of slot records: no allocator needed.
pub type ArrayPool<const N: usize> = Pool<[Slot; N]>;

/// A pool over a `Vec` of slot records sized to its configuration.
#[cfg(feature = "alloc")]
pub type VecPool = Pool<alloc::vec::Vec<Slot>>;

/// The slot bookkeeping of one buffer region (see the module docs).
///
/// `S` is the storage for the slot records: `[Slot; N]`, `&mut [Slot]`, or
/// `Vec<Slot>` with `alloc`.
#[derive(Debug, Clone)]
pub struct Pool<S> {
    slots: S,
    classes: [Class; CLASSES_MAX],
    class_count: usize,
    slot_count: u32,
    headroom: usize,
    region_len: usize,
    stats: PoolStats,
}

#[cfg(feature = "alloc")]
impl Pool<alloc::vec::Vec<Slot>> {
    /// A pool whose slot records live in a `Vec` of exactly
    /// [`PoolConfig::slot_count`] records (the one allocation it makes).
    ///
    /// # Errors
    ///
    /// As [`PoolConfig::validate`].
    pub fn new_vec(config: &PoolConfig) -> Result<Self, PoolConfigError> {
        config.validate()?;
        Pool::new(alloc::vec![Slot::EMPTY; config.slot_count()], config)
    }
}

impl<S: AsRef<[Slot]> + AsMut<[Slot]>> Pool<S> {
    /// A pool laid out from `config`, its slot records kept in `storage`
    /// (whose previous contents are overwritten). Every slot starts free, at
    /// generation 0. Records of `storage` beyond the configured slots stay
    /// unused.
    ///
    /// # Errors
    ///
    /// As [`PoolConfig::validate`], and [`PoolConfigError::TooManySlots`]
    /// when `storage` holds fewer records than the classes have slots.
    pub fn new(mut storage: S, config: &PoolConfig) -> Result<Self, PoolConfigError> {
        let (slot_count, region_len) = config.layout()?;
        let records = storage.as_mut();
        if slot_count > records.len() {
            return Err(PoolConfigError::TooManySlots {
                needed: slot_count,
                capacity: records.len(),
            });
        }
        let mut classes = [Class::UNUSED; CLASSES_MAX];
        let mut first = 0usize;
        let mut base = 0usize;
        // `layout` bounded the class count by CLASSES_MAX (≤ u8::MAX), the
        // slot count by SLOTS_MAX (< u32::MAX) and the region by usize::MAX,
        // so none of the conversions and sums below can fail or overflow.
        for ((c, spec), class) in config.classes.iter().enumerate().zip(classes.iter_mut()) {
            let class_records = records
                .get_mut(first..first + spec.count)
                .unwrap_or(&mut []);
            let mut next = NIL;
            // Thread the free list backwards so it pops in index order.
            for (k, record) in class_records.iter_mut().enumerate().rev() {
                *record = Slot {
                    generation: 0,
                    next,
                    class: c as u8,
                    state: Inner::Free,
                };
                next = (first + k) as u32;
            }
            *class = Class {
                slot_size: spec.slot_size,
                first: first as u32,
                count: spec.count as u32,
                base,
                head: next,
                free: spec.count as u32,
            };
            first += spec.count;
            base += spec.slot_size * spec.count;
        }
        Ok(Pool {
            slots: storage,
            classes,
            class_count: config.classes.len(),
            slot_count: slot_count as u32,
            headroom: config.headroom,
            region_len,
            stats: PoolStats::default(),
        })
    }

    /// Bytes of the region the driver must provide (and register).
    pub fn region_len(&self) -> usize {
        self.region_len
    }

    /// Bytes reserved in front of every payload.
    pub fn headroom(&self) -> usize {
        self.headroom
    }

    /// Slots over all classes.
    pub fn slot_count(&self) -> usize {
        self.slot_count as usize
    }

    /// Slots free now, over all classes.
    pub fn free_count(&self) -> usize {
        self.slot_count() - self.stats.in_use()
    }

    /// Number of size classes.
    pub fn class_count(&self) -> usize {
        self.class_count
    }

    /// Size class `class` (an index below [`Pool::class_count`]), or `None`.
    pub fn class(&self, class: usize) -> Option<ClassInfo> {
        let c = self
            .classes
            .get(class)
            .filter(|_| class < self.class_count)?;
        Some(ClassInfo {
            slot_size: c.slot_size,
            payload_capacity: c.slot_size - self.headroom,
            count: c.count as usize,
            free: c.free as usize,
            region_offset: c.base,
        })
    }

    /// The largest payload any slot holds (the largest `zcb_alloc`).
    pub fn payload_capacity_max(&self) -> usize {
        self.class(self.class_count - 1)
            .map_or(0, |c| c.payload_capacity)
    }

    /// The smallest class whose payload holds `len` bytes, free or not.
    pub fn class_for_len(&self, len: usize) -> Option<usize> {
        self.classes[..self.class_count]
            .iter()
            .position(|c| c.slot_size - self.headroom >= len)
    }

    /// Counters.
    pub fn stats(&self) -> &PoolStats {
        &self.stats
    }

    /// A slot for a payload of `len` bytes, now [`SlotState::Owned`].
    ///
    /// Takes the smallest class whose payload capacity is at least `len`; if
    /// that class has no free slot, the next larger one that has, never a
    /// smaller one.
    ///
    /// # Errors
    ///
    /// [`AllocError::TooBig`] when `len` exceeds
    /// [`Pool::payload_capacity_max`]; [`AllocError::Exhausted`] when every
    /// class that fits is empty (the caller answers `CS_ERR_TRY_AGAIN`).
    pub fn alloc(&mut self, len: usize) -> Result<SlotId, AllocError> {
        self.assert_counts();
        let Some(best) = self.class_for_len(len) else {
            self.stats.too_big += 1;
            return Err(AllocError::TooBig {
                len,
                max: self.payload_capacity_max(),
            });
        };
        let records = self.slots.as_mut();
        for (c, class) in self.classes[best..self.class_count].iter_mut().enumerate() {
            let index = class.head;
            let Some(slot) = records.get_mut(index as usize) else {
                // NIL: this class is empty
                assert!(
                    class.free == 0,
                    "pool: class {} has no free list but counts {} free",
                    best + c,
                    class.free
                );
                continue;
            };
            // The free list holds free slots of its own class only.
            assert!(
                slot.state == Inner::Free
                    && usize::from(slot.class) == best + c
                    && index.wrapping_sub(class.first) < class.count
                    && class.free > 0,
                "pool: free list of class {} (free {}) leads to slot {index} of class {} in state {:?}",
                best + c,
                class.free,
                slot.class,
                slot.state
            );
            class.head = slot.next;
            class.free -= 1;
            slot.next = NIL;
            slot.state = Inner::Owned;
            self.stats.allocated += 1;
            self.stats.owned += 1;
            self.stats.in_use_max = self.stats.in_use_max.max(self.stats.in_use());
            return Ok(SlotId {
                index,
                generation: slot.generation,
            });
        }
        self.stats.exhausted += 1;
        Err(AllocError::Exhausted)
    }

    /// The application gives back a slot it never sent: Owned → Free.
    ///
    /// # Errors
    ///
    /// [`SlotError`] for a bad id or a slot not Owned.
    pub fn release(&mut self, id: SlotId) -> Result<(), SlotError> {
        self.assert_counts();
        let slot = live_mut(self.slots.as_mut(), self.slot_count, id)?;
        expect(slot.state, StateKind::Owned)?;
        self.stats.owned -= 1;
        self.free(id.index);
        Ok(())
    }

    /// The application hands the slot to the engine (`mcast`): Owned → Queued.
    ///
    /// # Errors
    ///
    /// [`SlotError`] for a bad id or a slot not Owned.
    pub fn enqueue(&mut self, id: SlotId) -> Result<(), SlotError> {
        self.assert_counts();
        let slot = live_mut(self.slots.as_mut(), self.slot_count, id)?;
        expect(slot.state, StateKind::Owned)?;
        slot.state = Inner::Queued;
        self.stats.owned -= 1;
        self.stats.queued += 1;
        Ok(())
    }

    /// A send reading the slot is submitted: Queued → InFlight with one
    /// send pending (the first transmission), or InFlight → one more pending
    /// (a retransmission).
    ///
    /// # Errors
    ///
    /// [`SlotError`] for a bad id; [`SlotError::WrongState`] (expected
    /// Queued) for a slot neither Queued nor InFlight;
    /// [`SlotError::SendsSaturated`] at `u16::MAX` pending sends.
    pub fn begin_send(&mut self, id: SlotId) -> Result<(), SlotError> {
        self.assert_counts();
        let slot = live_mut(self.slots.as_mut(), self.slot_count, id)?;
        assert_in_flight_held(id, slot.state);
        match slot.state {
            Inner::Queued => {
                slot.state = Inner::InFlight {
                    sends_pending: 1,
                    stable: false,
                };
                self.stats.queued -= 1;
                self.stats.in_flight += 1;
            }
            Inner::InFlight {
                sends_pending,
                stable,
            } => {
                let sends_pending = sends_pending
                    .checked_add(1)
                    .ok_or(SlotError::SendsSaturated)?;
                slot.state = Inner::InFlight {
                    sends_pending,
                    stable,
                };
            }
            other => {
                return Err(SlotError::WrongState {
                    expected: StateKind::Queued,
                    found: other.kind(),
                })
            }
        }
        Ok(())
    }

    /// A plain (copying) send of the slot completed: one send fewer pending.
    /// Frees the slot if it is stable and this was the last pending send.
    ///
    /// # Errors
    ///
    /// [`SlotError`] for a bad id, a slot not InFlight, or no send pending.
    pub fn on_send_complete(&mut self, id: SlotId) -> Result<Outcome, SlotError> {
        self.assert_counts();
        let slot = live_mut(self.slots.as_mut(), self.slot_count, id)?;
        assert_in_flight_held(id, slot.state);
        let Inner::InFlight {
            sends_pending,
            stable,
        } = slot.state
        else {
            return Err(SlotError::WrongState {
                expected: StateKind::InFlight,
                found: slot.state.kind(),
            });
        };
        let sends_pending = sends_pending
            .checked_sub(1)
            .ok_or(SlotError::NoSendPending)?;
        slot.state = Inner::InFlight {
            sends_pending,
            stable,
        };
        Ok(self.free_if_done(id.index, sends_pending, stable))
    }

    /// The zero-copy notification of a `SendZc` arrived: the kernel no
    /// longer reads the slot. Same as [`Pool::on_send_complete`]; the first
    /// completion of a `SendZc` (the one flagged "more") is not reported.
    ///
    /// # Errors
    ///
    /// As [`Pool::on_send_complete`].
    pub fn on_zc_notif(&mut self, id: SlotId) -> Result<Outcome, SlotError> {
        self.on_send_complete(id)
    }

    /// The engine says every member has the message (it is stable), so it
    /// is no longer kept for retransmission. Frees the slot if no send is
    /// pending; otherwise the last completion frees it.
    ///
    /// # Errors
    ///
    /// [`SlotError`] for a bad id or a slot not InFlight;
    /// [`SlotError::AlreadyStable`] the second time.
    pub fn mark_stable(&mut self, id: SlotId) -> Result<Outcome, SlotError> {
        self.assert_counts();
        let slot = live_mut(self.slots.as_mut(), self.slot_count, id)?;
        assert_in_flight_held(id, slot.state);
        let Inner::InFlight {
            sends_pending,
            stable,
        } = slot.state
        else {
            return Err(SlotError::WrongState {
                expected: StateKind::InFlight,
                found: slot.state.kind(),
            });
        };
        if stable {
            return Err(SlotError::AlreadyStable);
        }
        slot.state = Inner::InFlight {
            sends_pending,
            stable: true,
        };
        Ok(self.free_if_done(id.index, sends_pending, true))
    }

    /// The state of a live slot.
    ///
    /// # Errors
    ///
    /// [`SlotError::UnknownSlot`] or [`SlotError::StaleSlot`].
    pub fn state(&self, id: SlotId) -> Result<SlotState, SlotError> {
        live(self.slots.as_ref(), self.slot_count, id).map(|s| s.state.public())
    }

    /// Whether a live slot has been marked stable.
    ///
    /// # Errors
    ///
    /// [`SlotError::UnknownSlot`] or [`SlotError::StaleSlot`].
    pub fn is_stable(&self, id: SlotId) -> Result<bool, SlotError> {
        live(self.slots.as_ref(), self.slot_count, id)
            .map(|s| matches!(s.state, Inner::InFlight { stable: true, .. }))
    }

    /// The size class of a live slot.
    ///
    /// # Errors
    ///
    /// [`SlotError::UnknownSlot`] or [`SlotError::StaleSlot`].
    pub fn class_of(&self, id: SlotId) -> Result<usize, SlotError> {
        live(self.slots.as_ref(), self.slot_count, id).map(|s| usize::from(s.class))
    }

    /// Byte offset in the region where a live slot starts (its headroom).
    ///
    /// # Errors
    ///
    /// [`SlotError::UnknownSlot`] or [`SlotError::StaleSlot`].
    pub fn slot_offset(&self, id: SlotId) -> Result<usize, SlotError> {
        let class = self.class_ref(id)?;
        // `layout` proved base + count * slot_size ≤ region_len.
        Ok(class.base + (id.index - class.first) as usize * class.slot_size)
    }

    /// Byte offset in the region of a live slot's payload
    /// (`slot_offset + headroom`).
    ///
    /// # Errors
    ///
    /// [`SlotError::UnknownSlot`] or [`SlotError::StaleSlot`].
    pub fn payload_offset(&self, id: SlotId) -> Result<usize, SlotError> {
        self.slot_offset(id).map(|o| o + self.headroom)
    }

    /// Payload bytes a live slot holds (`slot_size - headroom`).
    ///
    /// # Errors
    ///
    /// [`SlotError::UnknownSlot`] or [`SlotError::StaleSlot`].
    pub fn payload_capacity(&self, id: SlotId) -> Result<usize, SlotError> {
        self.class_ref(id).map(|c| c.slot_size - self.headroom)
    }

    fn class_ref(&self, id: SlotId) -> Result<&Class, SlotError> {
        let slot = live(self.slots.as_ref(), self.slot_count, id)?;
        self.classes
            .get(usize::from(slot.class))
            .ok_or(SlotError::UnknownSlot)
    }

    /// Free an in-flight slot once it is stable with nothing pending.
    fn free_if_done(&mut self, index: u32, sends_pending: u16, stable: bool) -> Outcome {
        if stable && sends_pending == 0 {
            self.stats.in_flight -= 1;
            self.free(index);
            Outcome::Freed
        } else {
            Outcome::Held
        }
    }

    /// Put a live slot (already taken off the gauges) on its free list and
    /// make every id of it stale.
    fn free(&mut self, index: u32) {
        let Some(slot) = self.slots.as_mut().get_mut(index as usize) else {
            return;
        };
        let Some(class) = self.classes.get_mut(usize::from(slot.class)) else {
            return;
        };
        // Callers free a live slot they have just taken off the gauges.
        assert!(
            slot.state != Inner::Free && class.free < class.count,
            "pool: slot {index} freed twice (class free {} of {})",
            class.free,
            class.count
        );
        slot.generation = slot.generation.wrapping_add(1);
        slot.state = Inner::Free;
        slot.next = class.head;
        class.head = index;
        class.free += 1;
        self.stats.freed += 1;
    }

    /// Panics unless the gauges add up: every slot is free (counted on its
    /// class's free list) or owned, queued or in flight, never two at once.
    /// O([`CLASSES_MAX`]); run at the start of every transition, so a
    /// bookkeeping slip is caught at the next call, not when a slot is
    /// handed out twice. No id can break this: ids are checked before any
    /// change, and every change moves one slot between two counts.
    fn assert_counts(&self) {
        let free: u32 = self.classes[..self.class_count]
            .iter()
            .map(|c| c.free)
            .sum();
        let s = &self.stats;
        assert!(
            free as usize + s.in_use() == self.slot_count as usize,
            "pool: {free} free + {} owned + {} queued + {} in flight != {} slots",
            s.owned,
            s.queued,
            s.in_flight,
            self.slot_count
        );
    }
}

/// Panics if `state` is a stable in-flight slot with no send pending: such
/// a slot is freed by the call that makes it so ([`Pool::mark_stable`] or
/// the last completion), so no live id can name one.
fn assert_in_flight_held(id: SlotId, state: Inner) {
    assert!(
        !matches!(
            state,
            Inner::InFlight {
                sends_pending: 0,
                stable: true
            }
        ),
        "pool: slot {} is stable with no send pending but not freed",
        id.index
    );
}

/// The record of a live (allocated) slot named by `id`.
fn live(slots: &[Slot], slot_count: u32, id: SlotId) -> Result<&Slot, SlotError> {
    if id.index >= slot_count {
        return Err(SlotError::UnknownSlot);
    }
    let slot = slots.get(id.index as usize).ok_or(SlotError::UnknownSlot)?;
    if slot.generation != id.generation || slot.state == Inner::Free {
        return Err(SlotError::StaleSlot);
    }
    Ok(slot)
}

/// As [`live`], mutably.
fn live_mut(slots: &mut [Slot], slot_count: u32, id: SlotId) -> Result<&mut Slot, SlotError> {
    if id.index >= slot_count {
        return Err(SlotError::UnknownSlot);
    }
    let slot = slots
        .get_mut(id.index as usize)
        .ok_or(SlotError::UnknownSlot)?;
    if slot.generation != id.generation || slot.state == Inner::Free {
        return Err(SlotError::StaleSlot);
    }
    Ok(slot)
}

/// `Ok` if `state` is of kind `expected`.
fn expect(state: Inner, expected: StateKind) -> Result<(), SlotError> {
    let found = state.kind();
    if found == expected {
        Ok(())
    } else {
        Err(SlotError::WrongState { expected, found })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const HEADROOM: usize = 16;

    /// Classes: 3 × 64 (payload 48), 2 × 256 (240), 2 × 1024 (1008).
    fn config() -> PoolConfig {
        PoolConfig::new(
            HEADROOM,
            &[
                ClassSpec::new(64, 3),
                ClassSpec::new(256, 2),
                ClassSpec::new(1024, 2),
            ],
        )
        .unwrap()
    }

    /// One spare record, to check that extra storage stays unused.
    fn pool() -> ArrayPool<8> {
        Pool::new([Slot::EMPTY; 8], &config()).unwrap()
    }

    fn wrong(expected: StateKind, found: StateKind) -> SlotError {
        SlotError::WrongState { expected, found }
    }

    /// Alloc, enqueue and one send: an InFlight slot with one pending send.
    fn in_flight<S: AsRef<[Slot]> + AsMut<[Slot]>>(p: &mut Pool<S>, len: usize) -> SlotId {
        let id = p.alloc(len).unwrap();
        p.enqueue(id).unwrap();
        p.begin_send(id).unwrap();
        id
    }

    #[test]
    fn happy_path_through_every_state() {
        let mut p = pool();
        let id = p.alloc(10).unwrap();
        assert_eq!(p.state(id), Ok(SlotState::Owned));
        p.enqueue(id).unwrap();
        assert_eq!(p.state(id), Ok(SlotState::Queued));
        p.begin_send(id).unwrap();
        assert_eq!(p.state(id), Ok(SlotState::InFlight { sends_pending: 1 }));
        p.begin_send(id).unwrap(); // a retransmission
        assert_eq!(p.state(id), Ok(SlotState::InFlight { sends_pending: 2 }));
        assert_eq!(p.on_send_complete(id), Ok(Outcome::Held));
        assert_eq!(p.on_zc_notif(id), Ok(Outcome::Held));
        assert_eq!(p.state(id), Ok(SlotState::InFlight { sends_pending: 0 }));
        assert_eq!(p.is_stable(id), Ok(false));
        assert_eq!(p.mark_stable(id), Ok(Outcome::Freed));
        assert_eq!(p.state(id), Err(SlotError::StaleSlot));
        let s = p.stats();
        assert_eq!(
            (s.allocated, s.freed, s.in_use(), s.in_use_max),
            (1, 1, 0, 1)
        );
        assert_eq!(p.free_count(), 7);
    }

    #[test]
    fn release_frees_an_owned_slot() {
        let mut p = pool();
        let id = p.alloc(1).unwrap();
        assert_eq!(p.release(id), Ok(()));
        assert_eq!(p.release(id), Err(SlotError::StaleSlot));
        assert_eq!(p.stats().freed, 1);
        assert_eq!(p.stats().owned, 0);
    }

    #[test]
    fn transitions_from_owned_refuse_wrong_ones() {
        let mut p = pool();
        let id = p.alloc(1).unwrap();
        assert_eq!(
            p.begin_send(id),
            Err(wrong(StateKind::Queued, StateKind::Owned))
        );
        assert_eq!(
            p.on_send_complete(id),
            Err(wrong(StateKind::InFlight, StateKind::Owned))
        );
        assert_eq!(
            p.on_zc_notif(id),
            Err(wrong(StateKind::InFlight, StateKind::Owned))
        );
        assert_eq!(
            p.mark_stable(id),
            Err(wrong(StateKind::InFlight, StateKind::Owned))
        );
        assert_eq!(p.state(id), Ok(SlotState::Owned));
    }

    #[test]
    fn transitions_from_queued_refuse_wrong_ones() {
        let mut p = pool();
        let id = p.alloc(1).unwrap();
        p.enqueue(id).unwrap();
        assert_eq!(
            p.release(id),
            Err(wrong(StateKind::Owned, StateKind::Queued))
        );
        assert_eq!(
            p.enqueue(id),
            Err(wrong(StateKind::Owned, StateKind::Queued))
        );
        assert_eq!(
            p.on_send_complete(id),
            Err(wrong(StateKind::InFlight, StateKind::Queued))
        );
        assert_eq!(
            p.mark_stable(id),
            Err(wrong(StateKind::InFlight, StateKind::Queued))
        );
        assert_eq!(p.state(id), Ok(SlotState::Queued));
        assert_eq!(p.stats().queued, 1);
    }

    #[test]
    fn transitions_from_in_flight_refuse_wrong_ones() {
        let mut p = pool();
        let id = in_flight(&mut p, 1);
        assert_eq!(
            p.release(id),
            Err(wrong(StateKind::Owned, StateKind::InFlight))
        );
        assert_eq!(
            p.enqueue(id),
            Err(wrong(StateKind::Owned, StateKind::InFlight))
        );
        assert_eq!(p.on_send_complete(id), Ok(Outcome::Held));
        assert_eq!(p.on_send_complete(id), Err(SlotError::NoSendPending));
        assert_eq!(p.on_zc_notif(id), Err(SlotError::NoSendPending));
        p.begin_send(id).unwrap();
        assert_eq!(p.mark_stable(id), Ok(Outcome::Held));
        assert_eq!(p.mark_stable(id), Err(SlotError::AlreadyStable));
        assert_eq!(p.is_stable(id), Ok(true));
        assert_eq!(p.state(id), Ok(SlotState::InFlight { sends_pending: 1 }));
        assert_eq!(p.on_zc_notif(id), Ok(Outcome::Freed));
    }

    #[test]
    fn sends_pending_saturates_without_panic() {
        let mut p = pool();
        let id = in_flight(&mut p, 1);
        for _ in 1..u16::MAX {
            p.begin_send(id).unwrap();
        }
        assert_eq!(
            p.state(id),
            Ok(SlotState::InFlight {
                sends_pending: u16::MAX
            })
        );
        assert_eq!(p.begin_send(id), Err(SlotError::SendsSaturated));
        assert_eq!(
            p.state(id),
            Ok(SlotState::InFlight {
                sends_pending: u16::MAX
            })
        );
    }

    #[test]
    fn stale_generation_after_free_and_realloc() {
        let mut p = pool();
        let old = p.alloc(1).unwrap();
        p.release(old).unwrap();
        let new = p.alloc(1).unwrap();
        assert_eq!(new.index(), old.index(), "LIFO free list reuses the slot");
        assert_ne!(new.generation(), old.generation());
        for r in [p.release(old), p.enqueue(old), p.begin_send(old)] {
            assert_eq!(r, Err(SlotError::StaleSlot));
        }
        assert_eq!(p.on_send_complete(old), Err(SlotError::StaleSlot));
        assert_eq!(p.on_zc_notif(old), Err(SlotError::StaleSlot));
        assert_eq!(p.mark_stable(old), Err(SlotError::StaleSlot));
        assert_eq!(p.state(old), Err(SlotError::StaleSlot));
        assert_eq!(p.slot_offset(old), Err(SlotError::StaleSlot));
        assert_eq!(p.payload_offset(old), Err(SlotError::StaleSlot));
        assert_eq!(p.payload_capacity(old), Err(SlotError::StaleSlot));
        assert_eq!(p.class_of(old), Err(SlotError::StaleSlot));
        assert_eq!(p.is_stable(old), Err(SlotError::StaleSlot));
        // The new id is untouched by all of that.
        assert_eq!(p.state(new), Ok(SlotState::Owned));
    }

    #[test]
    fn forged_ids_are_errors() {
        let mut p = pool();
        // Index 7 is a spare storage record, 8 and beyond are past it.
        for index in [7, 8, u32::MAX] {
            let id = SlotId::from_parts(index, 0);
            assert_eq!(p.release(id), Err(SlotError::UnknownSlot));
            assert_eq!(p.slot_offset(id), Err(SlotError::UnknownSlot));
        }
        // A free slot at its current generation was never handed out.
        assert_eq!(
            p.enqueue(SlotId::from_parts(0, 0)),
            Err(SlotError::StaleSlot)
        );
        assert_eq!(
            p.mark_stable(SlotId::from_parts(0, 1)),
            Err(SlotError::StaleSlot)
        );
    }

    #[test]
    fn exhausted_then_success_after_free() {
        let mut p = pool();
        let ids: Vec<SlotId> = (0..7).map(|_| p.alloc(0).unwrap()).collect();
        assert_eq!(p.alloc(0), Err(AllocError::Exhausted));
        assert_eq!(p.alloc(1000), Err(AllocError::Exhausted));
        assert_eq!(p.stats().exhausted, 2);
        assert_eq!(CsError::from(AllocError::Exhausted), CsError::TryAgain);
        assert_eq!(p.free_count(), 0);
        p.release(ids[6]).unwrap(); // a 1024 slot
        let again = p.alloc(0).unwrap();
        assert_eq!(p.class_of(again), Ok(2));
        assert_eq!(p.stats().in_use_max, 7);
    }

    #[test]
    fn too_big_is_typed_and_counted() {
        let mut p = pool();
        assert_eq!(p.payload_capacity_max(), 1024 - HEADROOM);
        assert!(p.alloc(1024 - HEADROOM).is_ok());
        let e = p.alloc(1024 - HEADROOM + 1);
        assert_eq!(
            e,
            Err(AllocError::TooBig {
                len: 1009,
                max: 1008
            })
        );
        assert_eq!(CsError::from(e.unwrap_err()), CsError::TooBig);
        assert_eq!(p.stats().too_big, 1);
        assert_eq!(p.stats().exhausted, 0);
    }

    #[test]
    fn class_selection_picks_smallest_fit() {
        let mut p = pool();
        let cases = [(0, 0), (48, 0), (49, 1), (240, 1), (241, 2), (1008, 2)];
        for (len, class) in cases {
            assert_eq!(p.class_for_len(len), Some(class), "len {len}");
            let id = p.alloc(len).unwrap();
            assert_eq!(p.class_of(id), Ok(class), "len {len}");
            assert!(p.payload_capacity(id).unwrap() >= len);
            p.release(id).unwrap();
        }
        assert_eq!(p.class_for_len(1009), None);
    }

    #[test]
    fn full_class_falls_back_to_larger_never_smaller() {
        let mut p = pool();
        let small: Vec<SlotId> = (0..3).map(|_| p.alloc(1).unwrap()).collect();
        assert!(small.iter().all(|&id| p.class_of(id) == Ok(0)));
        // Class 0 is empty: the next small alloc goes to class 1, then 2.
        let a = p.alloc(1).unwrap();
        let b = p.alloc(1).unwrap();
        let c = p.alloc(1).unwrap();
        assert_eq!(
            [p.class_of(a), p.class_of(b), p.class_of(c)],
            [Ok(1), Ok(1), Ok(2)]
        );
        // Class 2 has one slot left; a medium alloc may take it...
        let d = p.alloc(200).unwrap();
        assert_eq!(p.class_of(d), Ok(2));
        // ...but with classes 1 and 2 full, freeing a small slot does not help a medium one.
        p.release(small[0]).unwrap();
        assert_eq!(p.alloc(200), Err(AllocError::Exhausted));
        assert_eq!(p.alloc(48).map(|id| p.class_of(id)), Ok(Ok(0)));
    }

    #[test]
    fn stable_before_notif_frees_exactly_once() {
        let mut p = pool();
        let id = in_flight(&mut p, 100);
        assert_eq!(p.mark_stable(id), Ok(Outcome::Held));
        assert_eq!(p.stats().in_flight, 1);
        assert_eq!(p.on_zc_notif(id), Ok(Outcome::Freed));
        assert_eq!(p.on_zc_notif(id), Err(SlotError::StaleSlot));
        assert_eq!(p.mark_stable(id), Err(SlotError::StaleSlot));
        assert_eq!((p.stats().freed, p.stats().in_flight), (1, 0));
        assert_eq!(p.class(1).unwrap().free, 2);
    }

    #[test]
    fn notif_before_stable_frees_exactly_once() {
        let mut p = pool();
        let id = in_flight(&mut p, 100);
        assert_eq!(p.on_zc_notif(id), Ok(Outcome::Held));
        assert_eq!(p.mark_stable(id), Ok(Outcome::Freed));
        assert_eq!(p.mark_stable(id), Err(SlotError::StaleSlot));
        assert_eq!(p.on_zc_notif(id), Err(SlotError::StaleSlot));
        assert_eq!((p.stats().freed, p.stats().in_flight), (1, 0));
        assert_eq!(p.class(1).unwrap().free, 2);
    }

    #[test]
    fn offsets_lie_in_the_region_and_never_overlap() {
        let mut p = pool();
        assert_eq!(p.region_len(), 3 * 64 + 2 * 256 + 2 * 1024);
        assert_eq!(p.region_len(), config().region_len().unwrap());
        let ids: Vec<SlotId> = (0..7).map(|_| p.alloc(0).unwrap()).collect();
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for &id in &ids {
            let start = p.slot_offset(id).unwrap();
            let payload = p.payload_offset(id).unwrap();
            let end = payload + p.payload_capacity(id).unwrap();
            let class = p.class(p.class_of(id).unwrap()).unwrap();
            assert_eq!(payload, start + HEADROOM);
            assert_eq!(end - start, class.slot_size);
            assert!(end <= p.region_len());
            spans.push((start, end));
        }
        spans.sort_unstable();
        assert_eq!(spans.first().map(|s| s.0), Some(0));
        for w in spans.windows(2) {
            assert_eq!(w[0].1, w[1].0, "slots tile the region: {w:?}");
        }
        assert_eq!(spans.last().map(|s| s.1), Some(p.region_len()));
    }

    #[test]
    fn class_info_describes_the_layout() {
        let p = pool();
        assert_eq!(p.class_count(), 3);
        let c1 = p.class(1).unwrap();
        assert_eq!(
            c1,
            ClassInfo {
                slot_size: 256,
                payload_capacity: 240,
                count: 2,
                free: 2,
                region_offset: 192
            }
        );
        assert_eq!(p.class(3), None);
        assert_eq!(p.slot_count(), 7);
        assert_eq!(p.headroom(), HEADROOM);
    }

    #[test]
    fn config_errors_are_typed() {
        let c = ClassSpec::new;
        let cases: [(usize, &[ClassSpec], PoolConfigError); 6] = [
            (0, &[], PoolConfigError::NoClasses),
            (
                0,
                &[c(64, 1), c(0, 1)],
                PoolConfigError::ZeroSlotSize { class: 1 },
            ),
            (0, &[c(64, 0)], PoolConfigError::EmptyClass { class: 0 }),
            (
                64,
                &[c(64, 1)],
                PoolConfigError::HeadroomTooLarge { class: 0 },
            ),
            (
                0,
                &[c(128, 1), c(64, 1)],
                PoolConfigError::ClassesNotAscending { class: 1 },
            ),
            (
                0,
                &[c(64, 1), c(usize::MAX / 2, 2)],
                PoolConfigError::RegionOverflow,
            ),
        ];
        for (headroom, classes, err) in cases {
            assert_eq!(PoolConfig::new(headroom, classes), Err(err), "{classes:?}");
        }
        let nine = [c(64, 1); 9];
        assert_eq!(
            PoolConfig::new(0, &nine),
            Err(PoolConfigError::TooManyClasses(9))
        );
        // Built by hand, the same checks run at Pool::new.
        let raw = PoolConfig {
            headroom: 0,
            classes: heapless::Vec::new(),
        };
        assert_eq!(
            Pool::new([Slot::EMPTY; 1], &raw).err(),
            Some(PoolConfigError::NoClasses)
        );
        assert_eq!(
            Pool::new([Slot::EMPTY; 6], &config()).err(),
            Some(PoolConfigError::TooManySlots {
                needed: 7,
                capacity: 6
            })
        );
        assert!(Pool::new(&mut [Slot::EMPTY; 7][..], &config()).is_ok());
    }

    #[test]
    fn errors_display_short_lowercase() {
        let texts = [
            SlotError::StaleSlot.to_string(),
            wrong(StateKind::Owned, StateKind::InFlight).to_string(),
            AllocError::Exhausted.to_string(),
            PoolConfigError::RegionOverflow.to_string(),
        ];
        assert_eq!(texts[1], "slot is in flight, expected owned");
        for t in texts {
            assert!(
                t.chars()
                    .next()
                    .is_some_and(|ch| ch.is_lowercase() || ch.is_ascii_digit()),
                "{t}"
            );
        }
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn vec_pool_sizes_itself() {
        let mut p: VecPool = Pool::new_vec(&config()).unwrap();
        assert_eq!(p.slot_count(), 7);
        let id = p.alloc(500).unwrap();
        assert_eq!(p.slot_offset(id), Ok(3 * 64 + 2 * 256));
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        struct Model {
            state: SlotState,
            stable: bool,
            class: usize,
        }

        #[derive(Debug, Clone)]
        enum Op {
            Alloc(usize),
            Release(usize),
            Enqueue(usize),
            BeginSend(usize),
            Complete(usize),
            Notif(usize),
            Stable(usize),
            Forged(u32, u32),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                3 => (0usize..1100).prop_map(Op::Alloc),
                1 => any::<usize>().prop_map(Op::Release),
                2 => any::<usize>().prop_map(Op::Enqueue),
                3 => any::<usize>().prop_map(Op::BeginSend),
                2 => any::<usize>().prop_map(Op::Complete),
                2 => any::<usize>().prop_map(Op::Notif),
                2 => any::<usize>().prop_map(Op::Stable),
                1 => (any::<u32>(), any::<u32>()).prop_map(|(i, g)| Op::Forged(i, g)),
            ]
        }

        /// What the model expects `op` on `id` to answer, and the model state after.
        fn step(m: Option<Model>, op: &Op) -> (Result<Option<Outcome>, SlotError>, Option<Model>) {
            let Some(mut m) = m else {
                return (Err(SlotError::StaleSlot), None);
            };
            let kind = m.state.kind();
            let freed_or_held = |m: Model| match m.state {
                SlotState::InFlight { sends_pending: 0 } if m.stable => {
                    (Ok(Some(Outcome::Freed)), None)
                }
                _ => (Ok(Some(Outcome::Held)), Some(m)),
            };
            match (op, m.state) {
                (Op::Release(_), SlotState::Owned) => (Ok(None), None),
                (Op::Enqueue(_), SlotState::Owned) => {
                    m.state = SlotState::Queued;
                    (Ok(None), Some(m))
                }
                (Op::Release(_) | Op::Enqueue(_), _) => {
                    (Err(wrong(StateKind::Owned, kind)), Some(m))
                }
                (Op::BeginSend(_), SlotState::Queued) => {
                    m.state = SlotState::InFlight { sends_pending: 1 };
                    (Ok(None), Some(m))
                }
                (Op::BeginSend(_), SlotState::InFlight { sends_pending }) => {
                    m.state = SlotState::InFlight {
                        sends_pending: sends_pending + 1,
                    };
                    (Ok(None), Some(m))
                }
                (Op::BeginSend(_), _) => (Err(wrong(StateKind::Queued, kind)), Some(m)),
                (Op::Complete(_) | Op::Notif(_), SlotState::InFlight { sends_pending: 0 }) => {
                    (Err(SlotError::NoSendPending), Some(m))
                }
                (Op::Complete(_) | Op::Notif(_), SlotState::InFlight { sends_pending }) => {
                    m.state = SlotState::InFlight {
                        sends_pending: sends_pending - 1,
                    };
                    freed_or_held(m)
                }
                (Op::Stable(_), SlotState::InFlight { .. }) if m.stable => {
                    (Err(SlotError::AlreadyStable), Some(m))
                }
                (Op::Stable(_), SlotState::InFlight { .. }) => {
                    m.stable = true;
                    freed_or_held(m)
                }
                (Op::Complete(_) | Op::Notif(_) | Op::Stable(_), _) => {
                    (Err(wrong(StateKind::InFlight, kind)), Some(m))
                }
                (Op::Alloc(_) | Op::Forged(..), _) => unreachable!(),
            }
        }

        fn run(ops: &[Op]) -> Result<(), TestCaseError> {
            let mut p = pool();
            let cfg = config();
            let caps: Vec<usize> = cfg.classes.iter().map(|c| c.slot_size - HEADROOM).collect();
            let mut free: Vec<usize> = cfg.classes.iter().map(|c| c.count).collect();
            let mut live: HashMap<SlotId, Model> = HashMap::new();
            let mut issued: Vec<SlotId> = Vec::new();
            let (mut allocated, mut freed, mut exhausted, mut too_big, mut high) =
                (0u64, 0u64, 0u64, 0u64, 0usize);
            for op in ops {
                match *op {
                    Op::Alloc(len) => {
                        let best = caps.iter().position(|&c| c >= len);
                        let got = p.alloc(len);
                        match best {
                            None => {
                                too_big += 1;
                                prop_assert_eq!(got, Err(AllocError::TooBig { len, max: caps[2] }));
                            }
                            Some(best) => match (best..caps.len()).find(|&c| free[c] > 0) {
                                None => {
                                    exhausted += 1;
                                    prop_assert_eq!(got, Err(AllocError::Exhausted));
                                }
                                Some(class) => {
                                    let id =
                                        got.map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                                    prop_assert_eq!(p.class_of(id), Ok(class));
                                    prop_assert!(!live.contains_key(&id) && !issued.contains(&id));
                                    free[class] -= 1;
                                    allocated += 1;
                                    live.insert(
                                        id,
                                        Model {
                                            state: SlotState::Owned,
                                            stable: false,
                                            class,
                                        },
                                    );
                                    issued.push(id);
                                    high = high.max(live.len());
                                }
                            },
                        }
                    }
                    Op::Forged(index, generation) => {
                        let id = SlotId::from_parts(index, generation);
                        let expected = if index >= 7 {
                            Err(SlotError::UnknownSlot)
                        } else if live.contains_key(&id) {
                            p.state(id)
                        } else {
                            Err(SlotError::StaleSlot)
                        };
                        prop_assert_eq!(p.state(id), expected);
                        if !live.contains_key(&id) {
                            prop_assert_eq!(p.mark_stable(id).err(), expected.err());
                        }
                    }
                    Op::Release(k)
                    | Op::Enqueue(k)
                    | Op::BeginSend(k)
                    | Op::Complete(k)
                    | Op::Notif(k)
                    | Op::Stable(k) => {
                        if issued.is_empty() {
                            continue;
                        }
                        let id = issued[k % issued.len()];
                        let before = live.get(&id).copied();
                        let got = match op {
                            Op::Release(_) => p.release(id).map(|()| None),
                            Op::Enqueue(_) => p.enqueue(id).map(|()| None),
                            Op::BeginSend(_) => p.begin_send(id).map(|()| None),
                            Op::Complete(_) => p.on_send_complete(id).map(Some),
                            Op::Notif(_) => p.on_zc_notif(id).map(Some),
                            _ => p.mark_stable(id).map(Some),
                        };
                        let (expected, after) = step(before, op);
                        prop_assert_eq!(got, expected, "{:?} on {:?} ({:?})", op, id, before);
                        match (before, after) {
                            (Some(b), None) => {
                                live.remove(&id);
                                free[b.class] += 1;
                                freed += 1;
                            }
                            (_, Some(a)) => {
                                live.insert(id, a);
                            }
                            (None, None) => {}
                        }
                    }
                }
                // The pool agrees with the model after every step.
                for (&id, m) in &live {
                    prop_assert_eq!(p.state(id), Ok(m.state));
                    prop_assert_eq!(p.is_stable(id), Ok(m.stable));
                }
                let count = |k: StateKind| live.values().filter(|m| m.state.kind() == k).count();
                let s = *p.stats();
                let want = PoolStats {
                    allocated,
                    freed,
                    exhausted,
                    too_big,
                    owned: count(StateKind::Owned),
                    queued: count(StateKind::Queued),
                    in_flight: count(StateKind::InFlight),
                    in_use_max: high,
                };
                prop_assert_eq!(s, want);
                for (c, &n) in free.iter().enumerate() {
                    prop_assert_eq!(p.class(c).map(|i| i.free), Some(n));
                }
            }
            // Live slots never share an index and never overlap in the region.
            let mut spans: Vec<(usize, usize)> = live
                .keys()
                .map(|&id| {
                    let start = p.slot_offset(id).unwrap();
                    (
                        start,
                        p.payload_offset(id).unwrap() + p.payload_capacity(id).unwrap(),
                    )
                })
                .collect();
            spans.sort_unstable();
            prop_assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0));
            prop_assert!(spans.iter().all(|s| s.1 <= p.region_len()));
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 256 }))]

            #[test]
            fn pool_agrees_with_model(ops in proptest::collection::vec(op(), 1..200)) {
                run(&ops)?;
            }
        }
    }
}
